/**
 * The example estate: one dom0, a bridged guest with its own "public" IP and provider MAC, a guest on the dom0's
 * host-local network behind NAT (installed from an image, booting its own kernel through pvgrub2), each with its
 * root volume, and Varnish on the dom0 routing HTTP by Host header to the NAT guest.
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
import { VarnishFrontend } from "../../provider";

const config = new pulumi.Config();
const connection = {
  host: config.require("dom0Host"),
  port: config.getNumber("dom0Port") ?? 22,
  hostKey: config.require("dom0HostKey"),
  privateKey: config.requireSecret("dom0PrivateKey"),
};

// web1 boots a kernel and initramfs kept on the dom0 (in the lab: the busybox guest kit, which configures eth0
// from xe.ip/xe.gw and serves HTTP); app1 boots its own through pvgrub2.
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
  // The busybox kit ignores shutdown requests: do not wait the default 120 s before `xl destroy`.
  shutdownTimeoutSeconds: 20,
});

const appIp = config.get("appIp") ?? "10.0.0.5";
const app = new XenGuest("app1", {
  connection,
  network: { mode: "nat", ip: appIp, network: "10.0.0.0/24" },
  rootSize: config.get("appRootSize") ?? "64MiB",
  memoryMiB: config.getNumber("appMemoryMiB") ?? 192,
  maxMemoryMiB: 256,
  type: "pv",
  // The guest boots its own kernel from its own disk through pvgrub2 (GRUB built for Xen, run inside the guest: no
  // bootloader runs in the dom0). The install unpacks the image, which carries /vmlinuz and /initrd.img, onto the
  // fresh root volume, writes the guest's network settings and the GRUB menu pvgrub2 reads.
  boot: { bootloader: "pvgrub2" },
  install: { image: config.get("appImage") ?? `${kitDir}/rootfs-boot.tar.gz` },
  waitForNetwork: { port: 80, timeoutSeconds: 300 },
  shutdownTimeoutSeconds: 20,
});

// Varnish on the dom0 answers HTTP on its port 80 and passes each request to the guest its Host header names:
// the way NAT'd guests serve the public. Adding a host name reloads Varnish without dropping a request.
const frontend = new VarnishFrontend(
  "frontend",
  {
    connection,
    sites: [{ hostnames: (config.get("appHostnames") ?? "app1.estate.test").split(","), backend: app.ip }],
    cacheSize: "64MiB",
    // Created once the guest serves: the frontend's up waits until each site answers through Varnish.
  },
  { dependsOn: [app] },
);

// Optional: a full Debian guest installed by debootstrap from a package mirror, the path for a user without
// images (`npm run pulumi -- config set debian true`). It is slow: minutes on a real server, tens of minutes
// inside the emulated lab dom0. By default it boots with pvgrub2 and its own kernel (needs grub-xen-host on
// the dom0); with debianKernelRelease set it boots the dom0's kernel directly instead.
let debian: XenGuest | undefined;
if (config.getBoolean("debian")) {
  const debianIp = config.get("debianIp") ?? "10.0.0.7";
  const release = config.get("debianKernelRelease");
  const proxy = config.get("debianProxy");
  const key = config.get("debianAuthorizedKey");
  debian = new XenGuest("deb1", {
    connection,
    network: { mode: "nat", ip: debianIp, network: "10.0.0.0/24" },
    rootSize: config.get("debianRootSize") ?? "1GiB",
    swapSize: "128MiB",
    // Debian's stock initrd needs about 768 MiB to unpack (FIELD-NOTES §10).
    memoryMiB: config.getNumber("debianMemoryMiB") ?? 768,
    type: "pv",
    boot: release
      ? {
          kernel: `/boot/vmlinuz-${release}`,
          ramdisk: `/boot/initrd.img-${release}`,
          cmdline: "root=/dev/xvda ro console=hvc0 net.ifnames=0",
        }
      : { bootloader: "pvgrub2" },
    install: {
      debootstrap: {
        suite: config.get("debianSuite") ?? "bookworm",
        mirror: config.get("debianMirror") ?? "http://deb.debian.org/debian",
        ...(proxy ? { proxy } : {}),
      },
      ...(key ? { authorizedKeys: [key] } : {}),
    },
    waitForNetwork: { port: 22, timeoutSeconds: config.getNumber("debianBootTimeout") ?? 900 },
  });
}

export const webRoot = web.rootPath;
export const webDomid = web.domid;
export const appRoot = app.rootPath;
export const appDomid = app.domid;
export const frontendVcl = frontend.activeVcl;
export const debianDomid = debian?.domid;
export const debianHostKey = debian?.sshHostKey;
