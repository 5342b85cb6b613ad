/** VarnishFrontend's remote scripts (pure strings). */
import { shellQuote } from "../../core/shell";
import { sha256 } from "../../remote/files";
import { VARNISH_VCL } from "./plan";

/** The digest of a VCL's source as {@link activeVclScript} prints it (trailing newlines do not count). */
export function vclDigest(source: string): string {
  return sha256(source.replace(/\n+$/, ""));
}

/**
 * The digest of what the drop-in tells systemd (its comment lines do not count): varnishd is restarted only when
 * this changes, so an upgrade that rewrites a comment restarts nothing.
 */
export function dropInDigest(text: string): string {
  return sha256(
    text
      .split("\n")
      .filter((l) => !/^\s*(#|$)/.test(l))
      .join("\n"),
  );
}

/** Restarts varnishd with the drop-in's command line (enabling the unit). */
export const RESTART_SCRIPT =
  "systemctl daemon-reload\nsystemctl enable --quiet varnish.service\nsystemctl restart varnish.service";

/**
 * Starts the package's access log daemon (varnishncsa.service) when it is enabled but not running, and prints
 * `log-daemon failed` when it will not start. Installed beside a varnishd that had no shared memory yet, it failed at
 * once, before its drop-in was there to make it try again. A host without the unit, or with it disabled, is left as
 * it is.
 */
export const LOG_DAEMON_SCRIPT = [
  "u=varnishncsa.service",
  'if systemctl is-enabled --quiet "$u" 2>/dev/null && ! systemctl is-active --quiet "$u"; then',
  '  systemctl reset-failed "$u" 2>/dev/null || true',
  '  systemctl start "$u" >&2 || echo "log-daemon failed"',
  "fi",
].join("\n");

/**
 * Waits until varnishd's child runs, up to `timeoutSeconds` by the clock (a busy host's CLI may take seconds per
 * answer, so counting attempts would not bound the wait); fails naming the journal when it does not.
 */
export function waitRunningScript(timeoutSeconds: number): string {
  const t = Math.max(1, Math.floor(timeoutSeconds));
  return [
    `end=$(( $(date +%s) + ${t} ))`,
    `until varnishadm -t 10 status 2>/dev/null | grep -q 'Child in state running'; do`,
    `  if [ "$(date +%s)" -ge "$end" ]; then echo "varnish is not running after ${t} s; see: journalctl -u varnish" >&2; exit 1; fi`,
    `  sleep 1`,
    `done`,
  ].join("\n");
}

/** Seconds to wait for varnishd's child after a start or restart: the serving deadline, and never under 300 s. */
export function runningDeadlineSeconds(readyTimeoutSeconds: number): number {
  return Math.max(300, readyTimeoutSeconds);
}

/**
 * What varnishreload does, with deadlines that suit a slow host: compile and load the VCL under a new name (the old
 * one keeps serving meanwhile; a VCL that fails leaves it in place), switch to it, then discard our older ones
 * beyond `keep`. varnishadm's own default deadline (5 s) is shorter than a compile on a busy dom0.
 */
export function reloadScript(keep: number): string {
  return [
    `name=xen_estate_$(date -u +%Y%m%d_%H%M%S_%N)`,
    `varnishadm -t 600 vcl.load "$name" ${VARNISH_VCL} >&2`,
    `varnishadm -t 60 vcl.use "$name" >&2`,
    `varnishadm -t 60 vcl.list | awk '$1 == "available" && $NF ~ /^xen_estate_/ {print $NF}' | head -n -${Math.max(0, Math.floor(keep))} |`,
    `  while read -r old; do varnishadm -t 60 vcl.discard "$old" >&2 || true; done`,
  ].join("\n");
}

/**
 * Prints `service active|inactive`, and when varnishd answers, `active <name>` and `active-sha <sha256>` of the
 * source of the VCL it runs (`vcl.show`), to compare with the file.
 */
export function activeVclScript(): string {
  return [
    `if systemctl is-active --quiet varnish.service; then echo "service active"; else echo "service inactive"; exit 0; fi`,
    // The service runs, so varnishadm must answer: a failure is "could not look", never "no VCL loaded".
    `if ! list=$(varnishadm -t 30 vcl.list); then echo "varnish.service is active but varnishadm vcl.list failed: cannot tell which VCL it runs" >&2; exit 1; fi`,
    `name=$(printf '%s\n' "$list" | awk '$1 == "active" {print $NF}')`,
    `[ -n "$name" ] || exit 0`,
    `echo "active $name"`,
    `src=$(varnishadm -t 30 vcl.show "$name")`,
    `echo "active-sha $(printf '%s' "$src" | sha256sum | cut -d' ' -f1)"`,
  ].join("\n");
}

/**
 * Waits, up to `timeoutSeconds`, until every probed backend of the active VCL is healthy and a request with each
 * site's Host header gets an answer other than 503 from `listenHost:listenPort`; fails naming the site that does
 * not serve. Works without curl (bash's /dev/tcp).
 */
export function waitServingScript(
  sites: readonly { id: string; hostnames: readonly string[]; probe: unknown }[],
  listen: string,
  timeoutSeconds: number,
): string {
  const [h, p] = listen.split(/:(?=\d+$)/);
  const host = h || "127.0.0.1";
  const checks = sites.map((s) => {
    const name =
      s.hostnames.find((n) => !n.startsWith("*.")) ?? `xen-estate-probe.${s.hostnames[0]!.slice(2)}`;
    return { id: s.id, name, probed: !!s.probe };
  });
  return [
    // Every value is a quoted word or a variable's value, never part of the code around it.
    `xe_host=${shellQuote(host)}; xe_port=${shellQuote(p ?? "")}`,
    `answer() { exec 3<>"/dev/tcp/$xe_host/$xe_port" || return 1; printf 'GET / HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' "$1" >&3; IFS= read -r -t 10 status <&3 || status=; exec 3<&-; printf '%s' "$status" | awk '{print $2}'; }`,
    `end=$(( $(date +%s) + ${Math.max(1, Math.floor(timeoutSeconds))} ))`,
    `active=$(varnishadm -t 30 vcl.list | awk '$1 == "active" {print $NF}')`,
    `while :; do`,
    `  waiting=`,
    `  backends=$(varnishadm -t 30 backend.list 2>/dev/null || true)`,
    ...checks.map((c) =>
      [
        ...(c.probed
          ? [
              `  printf '%s\\n' "$backends" | awk -v b="$active".${shellQuote(c.id)} '$1 == b' | grep -qw healthy || waiting="$waiting "${shellQuote(`${c.name} (backend sick)`)}`,
            ]
          : []),
        `  code=$(answer ${shellQuote(c.name)} || true); case "$code" in ""|503) waiting="$waiting "${shellQuote(c.name)}" (HTTP \${code:-no answer})" ;; esac`,
      ].join("\n"),
    ),
    `  [ -n "$waiting" ] || exit 0`,
    `  if [ "$(date +%s)" -ge "$end" ]; then xe_say "not serving after ${timeoutSeconds} s:$waiting"; exit 1; fi`,
    `  sleep 1`,
    `done`,
  ].join("\n");
}
