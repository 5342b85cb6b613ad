/**
 * Planning speed: check + diff + render for 1,000 guest-like configs, the work `pulumi preview` does per resource.
 * The baseline, measured in the same run, is a JSON round trip of the same inputs, so the ratio is comparable
 * across machines; the absolute figure is checked against the target of 1 ms per resource.
 */
import { fixtureKeys } from "../support/fixture-keys";
import { checkInputs, planDiff, render, VERSION } from "../../provider";

const COUNT = 1000;

function guestContext(i: number): Record<string, unknown> {
  const name = `guest${i}`;
  return {
    version: VERSION,
    name,
    type: "pvh",
    vcpus: 1 + (i % 4),
    maxvcpus: 4,
    memoryMiB: 512 + (i % 8) * 128,
    maxMemoryMiB: 2048,
    boot: {
      kind: "direct",
      kernel: "/var/lib/xen-estate/kernels/vmlinuz",
      ramdisk: null,
      cmdline: "root=/dev/xvda ro console=hvc0",
    },
    disks: [
      { path: `/dev/vg0/${name}-root`, vdev: "xvda", access: "rw" },
      { path: `/dev/vg0/${name}-swap`, vdev: "xvdb", access: "rw" },
    ],
    vifs: [
      {
        mac: `00:16:3e:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`,
        bridge: "xenbr0",
        ip: null,
        script: null,
        vifname: null,
      },
    ],
    onPoweroff: "destroy",
    onReboot: "restart",
    onCrash: "restart",
  };
}

function measure(fn: () => void, rounds = 5): number {
  fn(); // warm up
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!; // median, in ms
}

export function benchPlanning(print: (name: string, value: number, unit: string) => void): void {
  const hostKey = fixtureKeys.hostFingerprint;
  const privateKey = fixtureKeys.clientPrivateKey;
  const contexts = Array.from({ length: COUNT }, (_, i) => guestContext(i));
  const news = contexts.map((ctx) => ({
    connection: { host: "dom0.example.net", hostKey },
    credentials: { privateKey },
    xenEstateVersion: VERSION,
    path: `/etc/xen/${String(ctx.name)}.cfg`,
    content: "",
    mode: "644",
    __ctx: ctx,
  }));
  const olds = news.map((n) => {
    const { inputs } = checkInputs("RemoteFile", { ...n, content: render("xl-domu.cfg", n.__ctx) });
    return { ...inputs, content: "stale" };
  });

  const planAll = (): void => {
    for (let i = 0; i < COUNT; i++) {
      const n = news[i]!;
      const content = render("xl-domu.cfg", n.__ctx);
      const { inputs, failures } = checkInputs("RemoteFile", { ...n, content });
      if (failures.length > 0 || !inputs) throw new Error(failures.map((f) => f.message).join("\n"));
      planDiff("RemoteFile", olds[i]!, inputs);
    }
  };
  const baseline = (): void => {
    for (let i = 0; i < COUNT; i++) JSON.parse(JSON.stringify(news[i]!)) as unknown;
  };

  const planMs = measure(planAll);
  const baseMs = measure(baseline);
  print("plan_per_resource", Number(((planMs / COUNT) * 1000).toFixed(1)), "us");
  print("plan_per_resource_target_ratio", Number((planMs / COUNT / 1).toFixed(3)), "x_of_1ms");
  print("plan_vs_json_roundtrip", Number((planMs / baseMs).toFixed(2)), "ratio");
  const heap = process.memoryUsage().heapUsed;
  print("plan_heap_used", Math.round(heap / 1024 / 1024), "MiB");
}
