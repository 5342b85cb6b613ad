/**
 * Lab figures, printed as `bench <name> <value> <unit>` lines:
 *   lab_image_build      seconds to build the dom0 image (only when this run had to build it; else lab_image_cached 1)
 *   lab_boot_to_ssh      seconds from QEMU start to SSH answering
 *   lab_xl_create        seconds for `xl create` of the busybox kit guest (LV disk + vif on xenbr0)
 *   lab_guest_http       seconds from `xl create` returning to the guest answering HTTP from dom0
 *   lab_xl_destroy       seconds for `xl destroy` + `lvremove`
 *   estate_up            seconds for `pulumi up` of the example estate (7 resources on one dom0) from nothing
 *   estate_up_handshakes_per_host   SSH logins the dom0's sshd accepted during that up (goal: 1)
 *   estate_up_handshakes_vs_one_per_resource   the same against the baseline of one connection per remote
 *                        resource, counted in the same run (lower is better; 1/resources is the floor)
 *   estate_second_up     seconds for an `up` that finds nothing to change
 *   lab_stop             seconds to stop the lab
 * Run by `npm run bench` (all figures) or `npm run bench -- lab`.
 */
import { createStack, repoRoot, resourceChanges } from "../engine/harness";
import { Lab, buildImage } from "./lab";
import { destroyKitGuest, kitGuestConfig, waitForKitHttp } from "./kit";

export interface LabBenchFigure {
  name: string;
  value: number;
  unit: string;
}

export async function runLabBench(
  print: (line: string) => void = (l) => console.log(l),
): Promise<LabBenchFigure[]> {
  const figures: LabBenchFigure[] = [];
  const emit = (name: string, value: number, unit: string): void => {
    figures.push({ name, value, unit });
    print(`bench ${name} ${value} ${unit}`);
  };
  const secs = (ms: number): number => Math.round(ms / 100) / 10;

  let t = Date.now();
  const image = await buildImage("dom0", { log: () => undefined });
  if (image.builtNow) emit("lab_image_build", secs(Date.now() - t), "s");
  else emit("lab_image_cached", 1, "bool");

  t = Date.now();
  const lab = await Lab.start("dom0", { instance: `bench-${process.pid}`, log: () => undefined });
  try {
    emit("lab_boot_to_ssh", secs(lab.bootMs ?? Date.now() - t), "s");
    const guest = { name: "benchkit", ip: "10.99.0.20", lv: "benchkit", mac: "00:16:3e:99:00:20" };
    await lab.ssh(`lvcreate -q -y -L 32M -n ${guest.lv} vg0 >/dev/null && cat > /tmp/${guest.name}.cfg`, {
      input: kitGuestConfig(guest),
    });
    t = Date.now();
    await lab.ssh(`xl create -q /tmp/${guest.name}.cfg`, { timeoutMs: 300_000 });
    emit("lab_xl_create", secs(Date.now() - t), "s");
    t = Date.now();
    await waitForKitHttp(lab, guest.ip, 300_000);
    emit("lab_guest_http", secs(Date.now() - t), "s");
    t = Date.now();
    await destroyKitGuest(lab, guest.name, guest.lv);
    emit("lab_xl_destroy", secs(Date.now() - t), "s");
    await benchEstate(lab, emit, secs);
  } finally {
    t = Date.now();
    await lab.stop();
    emit("lab_stop", secs(Date.now() - t), "s");
  }
  return figures;
}

/** `pulumi up` of the example estate, counting the SSH logins the dom0's sshd accepted meanwhile. */
async function benchEstate(
  lab: Lab,
  emit: (name: string, value: number, unit: string) => void,
  secs: (ms: number) => number,
): Promise<void> {
  const stack = await createStack({
    programDir: repoRoot(),
    linkPackage: true,
    config: lab.stackConfig(),
  });
  try {
    const before = await lab.acceptedLogins();
    let t = Date.now();
    const up = await stack.up();
    emit("estate_up", secs(Date.now() - t), "s");
    // The second count logs in once itself.
    const handshakes = (await lab.acceptedLogins()) - before - 1;
    const remote = resourceChanges(up).filter(
      (s) => s.op === "create" && !s.type.includes(":components:"),
    ).length;
    emit("estate_up_handshakes_per_host", handshakes, "count");
    emit(
      "estate_up_handshakes_vs_one_per_resource",
      Math.round((handshakes / remote) * 1000) / 1000,
      "ratio",
    );
    t = Date.now();
    await stack.up();
    emit("estate_second_up", secs(Date.now() - t), "s");
    await stack.destroy();
  } finally {
    await stack.remove();
  }
}

if (require.main === module) {
  runLabBench().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
