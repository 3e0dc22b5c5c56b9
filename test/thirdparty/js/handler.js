// A small wasi:http handler in JavaScript for the third-party trials, built into a component by
// @bytecodealliance/componentize-js (SpiderMonkey/StarlingMonkey). The same routes as the
// CPython handler (test/thirdparty/python/http/app.py), so one table of expected responses
// serves both: / greets, /echo returns the body, /headers reflects a request header, /sum adds
// query numbers, anything else is 404.

const LANGUAGE = "JavaScript";

async function handle(request) {
  const url = new URL(request.url);
  const text = (body, status = 200, headers = {}) =>
    new Response(body, { status, headers: { "content-type": "text/plain", ...headers } });
  switch (url.pathname) {
    case "/":
      console.log(`request ${request.method} ${url.pathname}`);
      return text(`hello from ${LANGUAGE} wasi:http\n`);
    case "/echo": {
      const body = new Uint8Array(await request.arrayBuffer());
      return new Response(body, {
        status: 200,
        headers: { "content-type": "application/octet-stream", "x-echo-length": String(body.length) },
      });
    }
    case "/headers": {
      const value = request.headers.get("x-test") ?? "(none)";
      return text(`x-test: ${value}\n`, 203, { "x-reflected": value });
    }
    case "/sum": {
      const numbers = url.searchParams.getAll("n").map(Number);
      const total = numbers.reduce((a, b) => a + b, 0);
      return text(`${numbers.join("+")}=${total}\n`);
    }
    default:
      return text(`not found: ${url.pathname}\n`, 404);
  }
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));
