/**
 * Logging from provider code. Inside the dynamic-provider process, messages go straight to the Pulumi engine
 * (so they appear in `pulumi up` output: progress lines as ephemeral status, the rest as diagnostics); elsewhere
 * (tests, benchmarks) they go to a sink the caller sets. Every message passes through redaction first.
 */
import * as path from "node:path";

export type Severity = "debug" | "info" | "warning" | "error";

export interface LogSink {
  (severity: Severity, message: string, opts: { ephemeral: boolean; urn?: string }): void;
}

/** Replaces every occurrence of each secret (and its base64 form) with `[secret]`. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) {
    if (!s || s.length < 4) continue;
    out = out.split(s).join("[secret]");
    // Multi-line secrets (keys) also leak one line at a time.
    if (s.includes("\n")) {
      for (const line of s.split("\n")) {
        if (line.trim().length >= 16) out = out.split(line.trim()).join("[secret]");
      }
    }
  }
  return out;
}

let sink: LogSink | undefined;

/** Routes log messages to `s` (tests); `undefined` restores the default. */
export function setLogSink(s: LogSink | undefined): void {
  sink = s;
}

/** A logger bound to one resource (its messages are prefixed with it) and to the secrets it must hide. */
export class Logger {
  constructor(
    readonly prefix: string,
    private readonly secrets: readonly string[] = [],
    readonly urn?: string,
  ) {}

  with(extraSecrets: readonly string[]): Logger {
    return new Logger(this.prefix, [...this.secrets, ...extraSecrets], this.urn);
  }

  debug(message: string): void {
    this.emit("debug", message, false);
  }
  info(message: string): void {
    this.emit("info", message, false);
  }
  warn(message: string): void {
    this.emit("warning", message, false);
  }
  error(message: string): void {
    this.emit("error", message, false);
  }
  /** A transient status line (percent, bytes, rate) that Pulumi shows beside the resource while it works. */
  progress(message: string): void {
    this.emit("info", message, true);
  }

  redact(text: string): string {
    return redact(text, this.secrets);
  }

  private emit(severity: Severity, message: string, ephemeral: boolean): void {
    const text = redact(this.prefix ? `[${this.prefix}] ${message}` : message, this.secrets);
    const opts: { ephemeral: boolean; urn?: string } = { ephemeral };
    if (this.urn) opts.urn = this.urn;
    (sink ?? defaultSink())(severity, text, opts);
  }
}

let engineSink: LogSink | undefined | null;

function defaultSink(): LogSink {
  if (engineSink === undefined) engineSink = makeEngineSink();
  return engineSink ?? consoleSink;
}

const consoleSink: LogSink = (severity, message) => {
  if (severity === "debug" && !process.env.XEN_ESTATE_DEBUG) return;
  process.stderr.write(`${severity}: ${message}\n`);
};

/**
 * The dynamic-provider process gets the engine's address as its first argument but does not hand it to
 * `pulumi.log`, so messages logged there would only reach the plugin's stderr. Talk to the engine directly.
 */
function makeEngineSink(): LogSink | null {
  const script = process.argv[1] ?? "";
  const engineAddr = process.argv[2];
  if (!/dynamic-provider/.test(script) || !engineAddr) return null;
  try {
    const pulumiDir = path.dirname(require.resolve("@pulumi/pulumi/package.json"));
    const grpc = require(require.resolve("@grpc/grpc-js", { paths: [pulumiDir] }));
    const engrpc = require("@pulumi/pulumi/proto/engine_grpc_pb");
    const engproto = require("@pulumi/pulumi/proto/engine_pb");
    const client = new engrpc.EngineClient(engineAddr, grpc.credentials.createInsecure());
    const levels: Record<Severity, number> = {
      debug: engproto.LogSeverity.DEBUG,
      info: engproto.LogSeverity.INFO,
      warning: engproto.LogSeverity.WARNING,
      error: engproto.LogSeverity.ERROR,
    };
    let chain: Promise<void> = Promise.resolve();
    return (severity, message, opts) => {
      // Serialise so messages keep their order.
      chain = chain.then(
        () =>
          new Promise<void>((resolve) => {
            const req = new engproto.LogRequest();
            req.setSeverity(levels[severity]);
            req.setMessage(message);
            req.setUrn(opts.urn ?? "");
            req.setEphemeral(opts.ephemeral);
            client.log(req, () => resolve());
          }),
      );
    };
  } catch {
    return null;
  }
}
