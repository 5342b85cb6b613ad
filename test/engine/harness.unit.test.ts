/**
 * The harness's readings of an engine event log: where a long `up` spent its time.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { KIND_TYPE_PREFIX, kindOps, slowestSteps, type EngineEvent } from "./harness";

const T = KIND_TYPE_PREFIX;
const urn = (type: string, name: string): string => `urn:pulumi:lab::walkthrough::${type}::${name}`;
const pre = (at: number, type: string, name: string, op: string, planning = false): EngineEvent => ({
  timestamp: at,
  resourcePreEvent: {
    metadata: { urn: urn(type, name), type, op },
    ...(planning ? { planning } : {}),
  },
});
const outs = (at: number, type: string, name: string, op: string): EngineEvent => ({
  timestamp: at,
  resOutputsEvent: { metadata: { urn: urn(type, name), type, op } },
});
const failed = (at: number, type: string, name: string, op: string): EngineEvent => ({
  timestamp: at,
  resOpFailedEvent: { metadata: { urn: urn(type, name), type, op } },
});

describe("slowestSteps", () => {
  test("lists the steps that changed something, longest first, each from its start to its end or failure", () => {
    const events = [
      pre(100, `${T}Dom0Packages`, "host-packages", "create"),
      pre(100, `${T}LinodeMigration`, "linode1-copy", "create"),
      pre(101, "pulumi:providers:xen", "default", "same"),
      outs(101, "pulumi:providers:xen", "default", "same"),
      pre(102, `${T}LvmVolume`, "data", "same"),
      outs(102, `${T}LvmVolume`, "data", "same"),
      outs(400, `${T}Dom0Packages`, "host-packages", "create"),
      failed(700, `${T}LinodeMigration`, "linode1-copy", "create"),
      pre(400, `${T}NatDomU`, "app1", "update"),
      outs(460, `${T}NatDomU`, "app1", "update"),
    ];
    assert.deepEqual(slowestSteps(events), [
      "LinodeMigration linode1-copy create 600 s",
      "Dom0Packages host-packages create 300 s",
      "NatDomU app1 update 60 s",
    ]);
  });

  test("keeps only the longest few and ignores preview's planned steps and steps that never ended", () => {
    const events = [
      pre(0, `${T}NatDomU`, "planned", "create", true),
      outs(50, `${T}NatDomU`, "planned", "create"),
      pre(0, `${T}NatDomU`, "cut-off", "create"),
      ...[1, 2, 3].flatMap((n) => [
        pre(0, `${T}LvmVolume`, `v${n}`, "create"),
        outs(n, `${T}LvmVolume`, `v${n}`, "create"),
      ]),
    ];
    assert.deepEqual(slowestSteps(events, 2), ["LvmVolume v3 create 3 s", "LvmVolume v2 create 2 s"]);
  });
});

describe("kindOps", () => {
  test("names xen-estate's steps that changed something as `<Kind> <op>`, sorted, and nothing else", () => {
    const events = [
      pre(100, "pulumi:pulumi:Stack", "stack", "create"),
      pre(100, "pulumi:providers:pulumi-nodejs", "default", "create"),
      pre(101, `${T}VarnishFrontend`, "frontend", "update"),
      pre(101, `${T}LvmVolume`, "data", "same"),
      pre(102, "xen-estate:components:Dom0Host", "dom0", "create"),
      pre(103, `${T}LvmVolume`, "nat3-disk", "delete"),
      pre(103, `${T}NatDomU`, "nat3", "delete"),
    ];
    assert.deepEqual(kindOps(events), ["LvmVolume delete", "NatDomU delete", "VarnishFrontend update"]);
  });
});
