/** The per-operation meter: operations running side by side each count their own round trips and handshakes. */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { countHandshake, countRoundTrip, describeMeter, metered, type Meter } from "../../provider/ssh/meter";

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 1));

describe("the meter", () => {
  test("two operations interleaved on one event loop each count only their own calls", async () => {
    const seen: Record<string, Meter> = {};
    const op = (name: string, trips: number, logins: number) =>
      metered(
        async () => {
          for (let i = 0; i < Math.max(trips, logins); i++) {
            await tick();
            if (i < trips) countRoundTrip();
            if (i < logins) countHandshake(`${name}@h:22`);
          }
          return name;
        },
        (m) => (seen[name] = m),
      );
    assert.deepEqual(await Promise.all([op("a", 5, 1), op("b", 2, 3)]), ["a", "b"]);
    assert.deepEqual(seen, {
      a: { roundTrips: 5, handshakes: 1, logins: { "a@h:22": 1 } },
      b: { roundTrips: 2, handshakes: 3, logins: { "b@h:22": 3 } },
    });
    assert.equal(describeMeter(seen.b), "2 remote round trips, 3 SSH handshakes (b@h:22 3)");
  });

  test("an operation that throws still reports what it cost, and the error passes through", async () => {
    let cost: Meter | undefined;
    await assert.rejects(
      metered(
        async () => {
          countRoundTrip();
          await tick();
          throw new Error("refused");
        },
        (m) => (cost = m),
      ),
      /refused/,
    );
    assert.deepEqual(cost, { roundTrips: 1, handshakes: 0, logins: {} });
  });

  test("counting outside an operation changes no meter", async () => {
    countRoundTrip();
    countHandshake("x@h:22");
    let cost: Meter | undefined;
    await metered(
      () => Promise.resolve(undefined),
      (m) => (cost = m),
    );
    assert.deepEqual(cost, { roundTrips: 0, handshakes: 0, logins: {} });
  });
});
