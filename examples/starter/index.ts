/**
 * A Xen estate on one dom0: a guest with its own public IP and the MAC your provider assigned to it, a guest on the
 * dom0's NAT network installed from an image, and Varnish on the dom0 routing a host name to the NAT guest.
 * Adjust the addresses and sizes, then `pulumi preview` (offline) and `pulumi up`.
 */
import * as pulumi from "@pulumi/pulumi";
import { VarnishFrontend } from "xen-estate";
import { XenGuest } from "xen-estate/components";

const config = new pulumi.Config();
const connection = {
  host: config.require("dom0Host"),
  hostKey: config.require("dom0HostKey"),
  privateKey: config.requireSecret("sshKey"),
};

// Bridged: an additional IP of the server, with its separate MAC from the provider (Hetzner Robot → IPs).
const web = new XenGuest("web1", {
  connection,
  network: {
    mode: "bridged",
    ip: config.get("webIp") ?? "203.0.113.10",
    mac: config.get("webMac") ?? "00:50:56:00:12:34",
    gateway: config.get("webGateway") ?? "203.0.113.1",
  },
  rootSize: "20GiB",
  swapSize: "1GiB",
  memoryMiB: 2048,
  boot: { bootloader: "pvgrub2" },
  install: {
    debootstrap: { suite: "bookworm" },
    authorizedKeys: config.getObject<string[]>("authorizedKeys") ?? [],
  },
  waitForNetwork: { port: 22, timeoutSeconds: 900 },
});

// Behind the dom0's NAT, installed from a root-filesystem image kept on the dom0.
const app = new XenGuest("app1", {
  connection,
  network: { mode: "nat", ip: "10.0.0.5" },
  rootSize: "10GiB",
  memoryMiB: 1024,
  boot: { bootloader: "pvgrub2" },
  install: { image: config.get("image") ?? "/var/lib/xen-estate/images/bookworm.tar.zst" },
});

new VarnishFrontend(
  "frontend",
  {
    connection,
    sites: [{ hostnames: [config.get("appHostname") ?? "app.example.org"], backend: app.ip }],
    // After the guest is up: the frontend's up waits until each site answers through Varnish.
  },
  { dependsOn: [app] },
);

export const webHostKey = web.sshHostKey;
export const appDomid = app.domid;
