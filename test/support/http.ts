/** HTTP requests of the tests, to servers reached through 127.0.0.1 (a lab machine's forwarded ports). */
import * as http from "node:http";

/** GET / from 127.0.0.1:`port` with an optional Host header: "STATUS body", or "error …". */
export function httpGet(port: number, host?: string): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get(
      {
        host: "127.0.0.1",
        port,
        path: "/",
        agent: false,
        timeout: 20_000,
        ...(host ? { headers: { host } } : {}),
      },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve(`${res.statusCode} ${body.trim()}`));
        res.on("error", (err) => resolve(`error ${err.message}`));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (e) => resolve(`error ${e.message}`));
  });
}
