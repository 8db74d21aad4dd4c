-- wrk script: POST one demo V2 infer request per call.
-- wrk -t2 -c32 -d20s -s bench/wrk-demo.lua http://127.0.0.1:8080
-- Set ACCEPT_ENCODING=zstd (or gzip) to ask for compressed responses.
wrk.method = "POST"
wrk.path = "/v2/models/demo/infer"
wrk.headers["Content-Type"] = "application/json"
local enc = os.getenv("ACCEPT_ENCODING")
if enc then wrk.headers["Accept-Encoding"] = enc end
wrk.body = '{"id":"42","inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[[41,58000,36,12000,2,690,0,0.35]]}]}'

done = function(summary, latency, requests)
  local codes = summary.errors.status
  io.write(string.format("non-2xx: %d\n", codes))
end
