/**
 * LvmVolume on the lab dom0 image's real LVM, as root: the cases of test/resources/lvm-volume.lab-cases.ts. Slow
 * tier: the same cases run on every run on the walkthrough's dom0 (test/examples/walkthrough.lab.test.ts).
 */
import { after, before, describe } from "node:test";
import { Lab } from "../lab/lab";
import { labMachine } from "../lab/shared";
import { slowTier } from "../support/tier";
import { lvmVolumeLabCases, type Dom0Target } from "./lvm-volume.lab-cases";

slowTier(
  "the same cases run on the walkthrough's dom0 in test/examples/walkthrough.lab.test.ts, which also proves the volumes of a whole estate",
);

const machine = labMachine("dom0");

describe("LvmVolume (and a guest's address check) on the lab dom0", { timeout: 20 * 60 * 1000 }, () => {
  let target: Dom0Target;
  let lab: Lab;
  before(async () => {
    lab = await machine.acquire();
    target = {
      connection: { host: lab.host, port: lab.port, hostKey: lab.hostKey },
      credentials: { privateKey: lab.privateKey },
      host: lab.host,
      root: (command, opts) => lab.ssh(command, opts ?? {}),
      rootExit: async (command) => (await lab.exec(command)).exitCode ?? -1,
    };
  });
  lvmVolumeLabCases(() => target);
  after(async () => {
    await machine.release();
  });
});
