"""HTTP routes. Handlers stay thin: they hand the request to `Proxy` and render its answer."""
