-- wrk script: POST one fixed ~1 KB OpenAI chat request with a bearer key (env BENCH_KEY),
-- and print a one-line JSON summary (prefixed "BENCH_RESULT ") for bench/run.py.

local key = os.getenv("BENCH_KEY") or "missing-key"
local model = os.getenv("BENCH_MODEL") or "bench-model"

local user_text = string.rep(
  "Summarise the quarterly support tickets for the billing team and list the top issues. ", 9
)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"model":"' .. model .. '","messages":['
  .. '{"role":"system","content":"You are a concise assistant for an internal helpdesk."},'
  .. '{"role":"user","content":"' .. user_text .. '"}'
  .. '],"temperature":0.2,"max_tokens":128}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"body_bytes":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, #wrk.body
  ))
end
