// Shared by scenario.mjs and e2ee.mjs, imported before the SDK loads.

// matrix-js-sdk 43 uses Promise.withResolvers (Node >= 22); polyfill it for older Node.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new Promise((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

// Node 18 (Debian 12's) has Web Crypto only as node:crypto's webcrypto, not as a global.
if (!globalThis.crypto) {
    globalThis.crypto = (await import("node:crypto")).webcrypto;
}

// Keep stdout for the result lines: the SDK's logger writes through console, bound when it loads.
const toStderr = (...args) => process.stderr.write(args.map((a) => (typeof a === "string" ? a : String(a))).join(" ") + "\n");
const quiet = () => {};
console.log = console.info = console.debug = console.trace = process.env.INTEROP_JS_DEBUG ? toStderr : quiet;
console.warn = console.error = toStderr;
