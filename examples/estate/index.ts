/**
 * The example estate: one dom0, a bridged guest with its own "public" IP and provider MAC, and a guest on the
 * dom0's host-local network behind NAT, each with its root volume.
 *
 * `npm run estate` boots the lab dom0 and runs this program against it (see README.md). Against a real server,
 * set the stack config yourself:
 *
 *   npm run pulumi -- config set dom0Host 203.0.113.5
 *   npm run pulumi -- config set dom0HostKey "SHA256:…"          # ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
 *   npm run pulumi -- config set --secret dom0PrivateKey "$(cat ~/.ssh/id_ed25519)"
 *   npm run pulumi -- config set webIp 203.0.113.10 && npm run pulumi -- config set webMac 00:50:56:00:12:34
 */
import * as pulumi from "@pulumi/pulumi";
// Inside this repository the example imports the sources; a project of yours imports "xen-estate/components".
import { XenGuest } from "../../components";

const config = new pulumi.Config();
const connection = {
  host: config.require("dom0Host"),
  port: config.getNumber("dom0Port") ?? 22,
  hostKey: config.require("dom0HostKey"),
  privateKey: config.requireSecret("dom0PrivateKey"),
};

// Guests boot a kernel and initramfs kept on the dom0 (in the lab: the busybox guest kit, which configures eth0
// from xe.ip/xe.gw and serves HTTP). Real guests would use pvgrub2 or a kernel of their own.
const kitDir = config.get("kitDir") ?? "/var/lib/xen-estate/kits/busybox";
const kit = (name: string, ip: string, prefix: number, gateway: string) => ({
  kernel: `${kitDir}/vmlinuz`,
  ramdisk: `${kitDir}/initrd.gz`,
  cmdline: `console=hvc0 xe.ip=${ip}/${prefix} xe.gw=${gateway} xe.name=${name}`,
});

const webIp = config.get("webIp") ?? "10.99.0.10";
const webGateway = config.get("webGateway") ?? "10.99.0.1";
const web = new XenGuest("web1", {
  connection,
  network: {
    mode: "bridged",
    ip: webIp,
    mac: config.get("webMac") ?? "00:16:3e:99:00:10",
    prefix: 24,
    gateway: webGateway,
  },
  rootSize: config.get("webRootSize") ?? "64MiB",
  memoryMiB: config.getNumber("webMemoryMiB") ?? 192,
  maxMemoryMiB: 256,
  type: "pv",
  boot: kit("web1", webIp, 24, webGateway),
  waitForNetwork: { port: 80, timeoutSeconds: 300 },
});

const appIp = config.get("appIp") ?? "10.0.0.5";
const app = new XenGuest("app1", {
  connection,
  network: { mode: "nat", ip: appIp, network: "10.0.0.0/24" },
  rootSize: config.get("appRootSize") ?? "64MiB",
  memoryMiB: config.getNumber("appMemoryMiB") ?? 192,
  maxMemoryMiB: 256,
  type: "pv",
  boot: kit("app1", appIp, 24, "10.0.0.1"),
  // Unattended install: the image is unpacked onto the fresh root volume, which the guest then boots into
  // (the kit's initramfs switches to it). Its network settings are the ones the install writes.
  install: { image: config.get("appImage") ?? `${kitDir}/rootfs.tar.gz` },
  waitForNetwork: { port: 80, timeoutSeconds: 300 },
});

export const webRoot = web.rootPath;
export const webDomid = web.domid;
export const appRoot = app.rootPath;
export const appDomid = app.domid;
