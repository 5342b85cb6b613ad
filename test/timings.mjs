// The timing table of a test run: which step started when, how long it took, and the total wall time.
//   node test/timings.mjs FILE   prints the table of the rows in FILE (what .ci/run shows at its end)
// A row is one line of FILE: start (ms since the epoch) TAB seconds TAB ok|FAIL|skip TAB name TAB note.
// test/setup.sh and test/run-tests.mjs append their rows to $XEN_ESTATE_TIMINGS when it is set.
import { appendFileSync, readFileSync } from "node:fs";

/** Appends rows to `file` (no-op without a file). */
export function appendRows(file, rows) {
  if (!file || rows.length === 0) return;
  appendFileSync(
    file,
    rows
      .map((r) => [r.start, r.seconds.toFixed(1), r.status, r.name, r.note ?? ""].join("\t"))
      .map((l) => `${l.replace(/\n/g, " ")}\n`)
      .join(""),
  );
}

export function readRows(file) {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      const [start, seconds, status, name, note] = l.split("\t");
      return { start: Number(start), seconds: Number(seconds), status, name, note };
    });
}

const mmss = (s) => `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, "0")}`;

/**
 * The table: rows in start order with their start offset and wall time; the total is the wall time from the
 * first start (or `since`) to the last end, so steps that ran side by side count once.
 */
export function formatTable(rows, { title = "timings", since, until } = {}) {
  if (rows.length === 0) return `${title}: nothing ran\n`;
  const sorted = [...rows].sort((a, b) => a.start - b.start);
  const t0 = since ?? sorted[0].start;
  const end = until ?? Math.max(...sorted.map((r) => r.start + r.seconds * 1000));
  const width = Math.min(64, Math.max(20, ...sorted.map((r) => r.name.length)));
  const lines = [
    `=== ${title} (wall clock; steps that overlap ran side by side)`,
    `${"step".padEnd(width)}  ${"start".padStart(7)}  ${"seconds".padStart(8)}  ${"m:ss".padStart(6)}  status  note`,
  ];
  for (const r of sorted) {
    lines.push(
      `${r.name.padEnd(width)}  ${`+${Math.round((r.start - t0) / 1000)}`.padStart(7)}  ${r.seconds.toFixed(1).padStart(8)}  ${mmss(r.seconds).padStart(6)}  ${r.status.padEnd(6)}  ${r.note ?? ""}`.trimEnd(),
    );
  }
  const total = (end - t0) / 1000;
  lines.push(
    `${"total".padEnd(width)}  ${"".padStart(7)}  ${total.toFixed(1).padStart(8)}  ${mmss(total).padStart(6)}`,
  );
  return `${lines.join("\n")}\n`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, since] = process.argv.slice(2);
  if (!file) {
    console.error("usage: node test/timings.mjs FILE [START_MS]");
    process.exit(2);
  }
  process.stdout.write(
    formatTable(readRows(file), { since: since ? Number(since) : undefined, until: Date.now() }),
  );
}
