/**
 * The shared validation and quoting helpers every check and script uses.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fc from "fast-check";
import { Checker, shellQuote } from "../../provider";
import { hostileStringArb } from "../support/hostile";

describe("Checker.oneOf", () => {
  test("suggests the closest word for a short typo, and does not compare a long value with every word", () => {
    const allowed = ["destroy", "restart", "preserve"] as const;
    const c = new Checker();
    c.oneOf({ a: "restrat" }, "a", allowed);
    assert.match(c.errors[0]!.message, /Did you mean "restart"\?/);
    const long = new Checker();
    long.oneOf({ a: `restart${"x".repeat(100_000)}` }, "a", allowed);
    assert.equal(long.errors.length, 1);
    assert.equal(long.errors[0]!.hint, undefined, "no edit distance over a 100k value");
  });
});

describe("shellQuote", () => {
  test("bash reads every quoted value back as exactly that one word (property)", () => {
    const values = fc.sample(
      fc.oneof(hostileStringArb, fc.string({ unit: "binary" })).map((s) => s.replace(/\0/g, "")),
      { numRuns: 400, seed: 9 },
    );
    const r = spawnSync("bash", ["-c", `printf '%s\\0' ${values.map(shellQuote).join(" ")}`], {
      encoding: "utf8",
      maxBuffer: 64 * 2 ** 20,
    });
    assert.equal(r.status, 0, r.stderr);
    // A lone surrogate has no UTF-8 form: it reaches bash (and comes back) as U+FFFD either way.
    const asSent = values.map((v) => Buffer.from(v, "utf8").toString("utf8"));
    assert.deepEqual(r.stdout.split("\0").slice(0, -1), asSent);
  });
});
