-- wrk script for benchmarks/bench_webhook.py: POST one pre-signed push payload with a
-- unique X-GitHub-Delivery per request (the signature covers the body only, so a fixed
-- body and signature stay valid while the delivery id varies).
-- usage: wrk -s bench_webhook.lua URL -- BODY_FILE SIGNATURE RUN_TAG
local threads = {}
local counter = 0
local tag = "x"
-- `id` is a global: setup() sets it in each thread's own Lua state (a local would shadow it)
id = 0

function setup(thread)
   thread:set("id", #threads + 1)  -- delivery ids are unique across threads
   table.insert(threads, thread)
end

function init(args)
   local f = assert(io.open(args[1], "rb"))
   wrk.body = f:read("*a")
   f:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["X-GitHub-Event"] = "push"
   wrk.headers["X-Hub-Signature-256"] = args[2]
   tag = args[3]
end

function request()
   counter = counter + 1
   wrk.headers["X-GitHub-Delivery"] = string.format("%s-%d-%d", tag, id, counter)
   return wrk.format()
end

function done(summary, latency, requests)
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, ' ..
      '"errors_read": %d, "errors_write": %d, "errors_timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
      summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
