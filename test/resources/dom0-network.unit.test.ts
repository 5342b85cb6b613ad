/**
 * Dom0Network's pure planning of its sysctls: which optional keys an update turns off, and the script that puts
 * their live values back to what the next boot gives.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  optionalSysctls,
  SYSCTL,
  sysctlScript,
  sysctlsTurnedOff,
} from "../../provider/resources/dom0-network/plan";

const V6 = { address: "2001:db8::2/64", gateway: "fe80::1" };
const IPV6_FORWARDING = "net.ipv6.conf.all.forwarding";
const PROXY_ARP = "net.ipv4.conf.all.proxy_arp";

describe("the optional sysctls of Dom0Network", () => {
  test("are on only when IPv6 or proxy ARP is declared", () => {
    assert.deepEqual(optionalSysctls({ ipv6: null, proxyArp: false }), []);
    assert.deepEqual(optionalSysctls({ ipv6: V6, proxyArp: true }), [IPV6_FORWARDING, PROXY_ARP]);
  });

  test("an update that drops IPv6 and proxy ARP turns both off; one that keeps them turns nothing off", () => {
    assert.deepEqual(sysctlsTurnedOff({ ipv6: V6, proxyArp: true }, { ipv6: null, proxyArp: false }), [
      IPV6_FORWARDING,
      PROXY_ARP,
    ]);
    assert.deepEqual(sysctlsTurnedOff({ ipv6: V6, proxyArp: true }, { ipv6: V6, proxyArp: true }), []);
    assert.deepEqual(sysctlsTurnedOff({ ipv6: null, proxyArp: false }, { ipv6: V6, proxyArp: true }), []);
    assert.deepEqual(sysctlsTurnedOff({ ipv6: V6, proxyArp: false }, { ipv6: null, proxyArp: true }), [
      IPV6_FORWARDING,
    ]);
  });
});

describe("the script applying Dom0Network's sysctls", () => {
  test("with nothing turned off loads br_netfilter and applies the file, and nothing else", () => {
    assert.equal(sysctlScript(), `modprobe br_netfilter\nsysctl -q -p ${SYSCTL} >&2`);
  });

  test("sets a key turned off to 0, then to what the system's sysctl files say of it, before applying the file", () => {
    const lines = sysctlScript([PROXY_ARP]).split("\n");
    assert.deepEqual(lines, [
      "modprobe br_netfilter",
      `sysctl -q -w ${PROXY_ARP}=0 >&2`,
      `sysctl -q -e --pattern '^(net\\.ipv4\\.conf\\.all\\.proxy_arp)([[:space:]=]|$)' --system >&2`,
      `sysctl -q -p ${SYSCTL} >&2`,
    ]);
  });

  test("is valid bash for every combination of keys turned off", () => {
    for (const off of [[], [PROXY_ARP], [IPV6_FORWARDING], [IPV6_FORWARDING, PROXY_ARP]]) {
      const r = spawnSync("bash", ["-n"], { input: sysctlScript(off), encoding: "utf8" });
      assert.equal(r.status, 0, `${off.join(",")}: ${r.stderr}`);
    }
  });
});
