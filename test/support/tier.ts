/**
 * Test tiers. `npm test` runs the fast tier: every feature proven once, the fastest real way. `npm run test:slow`
 * runs every tier: slower duplicates of those proofs as well (debootstrap from a mirror beside the image install,
 * whole matrices beside one case of each kind, soak runs). A file joins the slow tier by saying so at its top
 * level, naming the fast test that proves the same feature on every run:
 *
 *   slowTier("the NAT guest's image install in test/examples/walkthrough.lab.test.ts proves install on every run");
 *
 * A file that scales itself (one cut in the fast tier, the whole matrix in the slow one) asks `runTier()`.
 * test/run-tests.mjs reads these declarations before it runs anything (test/support/plan.ts).
 */
export type Tier = "fast" | "slow";

const declared: string[] = [];

/** Puts this file in the slow tier; `fastProof` says which test proves the same feature in the fast tier. */
export function slowTier(fastProof: string): void {
  if (fastProof.trim() === "") throw new Error("slowTier: name the fast test that proves the same feature");
  declared.push(fastProof);
}

/** What slowTier() calls this process has made (test/support/plan.ts reads them for each file it loads). */
export function takeDeclaredTiers(): string[] {
  return declared.splice(0);
}

/** The tier of this run: `slow` under `npm run test:slow` (XEN_ESTATE_TEST_TIER), else `fast`. */
export function runTier(): Tier {
  return process.env.XEN_ESTATE_TEST_TIER === "slow" ? "slow" : "fast";
}
