-- wrk script: POST a ~1 KB OpenAI chat request carrying five PII values (an email, a
-- Nigerian mobile number, a Luhn-valid card, an IBAN, an sk- API key) with a bearer key
-- (env BENCH_KEY). The email, phone, card and API key change on every request, so a
-- per-text result cache in the gateway cannot hide the analysis cost; the IBAN is fixed.
-- Counts guarded answers from the `x-railgate-guards` / `x-railgate-guard-ms` headers and
-- prints a one-line JSON summary (prefixed "BENCH_RESULT ") for bench/run.py.

local key = os.getenv("BENCH_KEY") or "missing-key"
local model = os.getenv("BENCH_MODEL") or "bench-model"

local ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local IBAN = "GB82 WEST 1234 5698 7654 32" -- the standard example IBAN (mod-97 valid)
local TEXT = "Please handle this support ticket. Ticket: Hello, I need help with a billing "
  .. "problem on my account. Please reach me by email at %s or call me on %s any time after "
  .. "5pm. Last month you charged my card %s twice for the same invoice, and the refund never "
  .. "arrived. Please send the refund to my bank account, IBAN %s, instead of the card. Our "
  .. "developer also pasted our integration key %s into the previous ticket by mistake; "
  .. "please make sure it is removed from your records. End of ticket. The customer has "
  .. "written to us twice already about this, so keep the tone warm and avoid jargon. "
  .. "Summarise the problem for the billing team, list what they should check first, and "
  .. "draft a short polite reply that confirms the next steps."

local counter = 0
local threads = {}
-- per-thread globals, read back in done() with thread:get()
guarded, entities, guard_ms, last_body_bytes = 0, 0, 0.0, 0

local function digits(n)
  local out = {}
  for i = 1, n do
    out[i] = math.random(0, 9)
  end
  return out
end

-- "4" + 14 random digits + the Luhn check digit, grouped 4-4-4-4.
local function card()
  local d = digits(15)
  d[1] = 4
  local sum = 0
  for i = 15, 1, -1 do -- the check digit will sit right of d[15], so d[15] is doubled
    local v = d[i]
    if (15 - i) % 2 == 0 then
      v = v * 2
      if v > 9 then
        v = v - 9
      end
    end
    sum = sum + v
  end
  d[16] = (10 - sum % 10) % 10
  local s = table.concat(d)
  return s:sub(1, 4) .. " " .. s:sub(5, 8) .. " " .. s:sub(9, 12) .. " " .. s:sub(13, 16)
end

-- sk-proj- + 40 characters with at least one letter and one digit (a random-looking key).
local function api_key()
  local out = { "sk-proj-", "k", tostring(math.random(0, 9)) }
  for _ = 1, 38 do
    local i = math.random(1, #ALNUM)
    out[#out + 1] = ALNUM:sub(i, i)
  end
  return table.concat(out)
end

local function json_string(s)
  return (s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end))
end

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  math.randomseed(os.time())
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
  counter = counter + 1
  local email = string.format("ada.obi%d@example.com", counter)
  local phone = string.format("+234 803 123 %04d", math.random(0, 9999))
  local text = string.format(TEXT, email, phone, card(), IBAN, api_key())
  local body = '{"model":"' .. model .. '","messages":['
    .. '{"role":"system","content":"You are a concise assistant for an internal helpdesk."},'
    .. '{"role":"user","content":"' .. json_string(text) .. '"}'
    .. '],"temperature":0.2,"max_tokens":128}'
  last_body_bytes = #body
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  local ms = headers["x-railgate-guard-ms"] or headers["X-Railgate-Guard-Ms"]
  if ms then
    guarded = guarded + 1
    guard_ms = guard_ms + (tonumber(ms) or 0)
    local g = headers["x-railgate-guards"] or headers["X-Railgate-Guards"] or ""
    entities = entities + (tonumber(g:match("pii%.pseudonymized=(%d+)")) or 0)
  end
end

function done(summary, latency, requests)
  local g, n, ms, size = 0, 0, 0.0, 0
  for _, t in ipairs(threads) do
    g = g + (t:get("guarded") or 0)
    n = n + (t:get("entities") or 0)
    ms = ms + (t:get("guard_ms") or 0)
    size = math.max(size, t:get("last_body_bytes") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"body_bytes":%d,"guarded":%d,"pii_pseudonymized":%d,"guard_ms_total":%.3f}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, size, g, n, ms
  ))
end
