/**
 * The lab's SMTP sink: QEMU's guestfwd runs one of these per connection a lab machine opens to 10.0.2.102:25
 * (LAB_SMTP), with the connection on stdin/stdout. It speaks just enough SMTP (RFC 5321: EHLO/HELO, MAIL, RCPT,
 * DATA, RSET, NOOP, QUIT) to take a message and appends it, with its envelope, to the file named by `--out`, one
 * JSON object a line. A test fixture: it accepts everything and relays nothing.
 *
 *   node dist/test/lab/smtpsink.js --out FILE
 */
import * as fs from "node:fs";

const out = process.argv[process.argv.indexOf("--out") + 1];
if (!out || process.argv.indexOf("--out") < 0) {
  process.stderr.write("usage: smtpsink.js --out FILE\n");
  process.exit(2);
}

const send = (line: string): void => void process.stdout.write(`${line}\r\n`);
let from = "";
let to: string[] = [];
let data: string[] | null = null;
let buf = "";

send("220 xen-estate-lab-smtp-sink ESMTP");
process.stdin.on("data", (chunk: Buffer) => {
  buf += chunk.toString("latin1");
  for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
    const line = buf.slice(0, i).replace(/\r$/, "");
    buf = buf.slice(i + 1);
    if (data) {
      if (line === ".") {
        fs.appendFileSync(
          out,
          `${JSON.stringify({ at: new Date().toISOString(), from, to, message: data.join("\n") })}\n`,
        );
        data = null;
        from = "";
        to = [];
        send("250 2.0.0 queued");
      } else data.push(line.startsWith("..") ? line.slice(1) : line);
      continue;
    }
    const verb = line.slice(0, 4).toUpperCase();
    if (verb === "EHLO") {
      send("250-xen-estate-lab-smtp-sink");
      send("250 8BITMIME");
    } else if (verb === "HELO") send("250 xen-estate-lab-smtp-sink");
    else if (verb === "MAIL") {
      from = /<([^>]*)>/.exec(line)?.[1] ?? "";
      send("250 2.1.0 ok");
    } else if (verb === "RCPT") {
      to.push(/<([^>]*)>/.exec(line)?.[1] ?? "");
      send("250 2.1.5 ok");
    } else if (verb === "DATA") {
      data = [];
      send("354 end with .");
    } else if (verb === "RSET") {
      from = "";
      to = [];
      send("250 ok");
    } else if (verb === "NOOP") send("250 ok");
    else if (verb === "QUIT") {
      send("221 bye");
      process.stdout.end();
      process.exit(0);
    } else send("502 5.5.2 not implemented");
  }
});
process.stdin.on("end", () => process.exit(0));
