/**
 * Every template renders its committed fixture to its committed golden file, byte for byte.
 * Regenerate after an intended change with `XEN_ESTATE_UPDATE_GOLDEN=1 npm run test:only -- unit`.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { render, templateNames } from "../provider";
import { repoRoot } from "./support/repo";

const repo = repoRoot();
const fixtures = path.join(repo, "test", "fixtures", "templates");
const golden = path.join(repo, "test", "golden");

describe("templates", () => {
  for (const name of templateNames()) {
    test(`${name}.hbs renders its fixture to the golden file`, () => {
      const fixture = path.join(fixtures, `${name}.json`);
      assert.ok(fs.existsSync(fixture), `every template needs a fixture: ${path.relative(repo, fixture)}`);
      const out = render(name, JSON.parse(fs.readFileSync(fixture, "utf8")) as object);
      const goldenFile = path.join(golden, name);
      if (process.env.XEN_ESTATE_UPDATE_GOLDEN) {
        fs.mkdirSync(path.dirname(goldenFile), { recursive: true });
        fs.writeFileSync(goldenFile, out);
      }
      assert.ok(fs.existsSync(goldenFile), `missing golden file ${path.relative(repo, goldenFile)}`);
      assert.equal(out, fs.readFileSync(goldenFile, "utf8"));
    });
  }

  test("a field missing from the context is an error, not an empty string in a config file", () => {
    const fixture = JSON.parse(
      fs.readFileSync(path.join(fixtures, "guest/xl-domu.cfg.json"), "utf8"),
    ) as Record<string, unknown>;
    delete fixture.memoryMiB;
    assert.throws(
      () => render("guest/xl-domu.cfg", fixture),
      /template guest\/xl-domu\.cfg\.hbs: .*memoryMiB/,
    );
  });

  test("values are not HTML-escaped", () => {
    const fixture = JSON.parse(
      fs.readFileSync(path.join(fixtures, "guest/xl-domu.cfg.json"), "utf8"),
    ) as Record<string, unknown>;
    (fixture.boot as Record<string, unknown>).cmdline = "root=/dev/xvda a<b&c";
    assert.match(render("guest/xl-domu.cfg", fixture), /a<b&c/);
  });
});
