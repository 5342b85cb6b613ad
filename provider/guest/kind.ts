/**
 * What BridgedDomU and NatDomU share as kinds: the declared change classes, the lifecycle, and the last step of
 * `check` (owner, installed settings and rendered files). Each kind adds only its network.
 */
import type { Checker } from "../core/validate";
import { UNKNOWN } from "../core/validate";
import type { Kind } from "../framework/kind";
import { renderedFiles } from "../framework/plan";
import type { GuestInputs, GuestOutputs } from "./args";
import { GUEST_CHANGE_NOTES, GUEST_CHANGES, GUEST_REPLACE_ON } from "./changes";
import type { GuestBase } from "./check";
import { guestSettingsOf, recordedInstall } from "./install";
import { guestLifecycle } from "./lifecycle";
import { configPath } from "./paths";
import { renderGuestConfig } from "./render";

/** The network part a guest kind's check adds to the base. */
export type GuestNetworkPart = Pick<GuestInputs, "vifs" | "guestNetwork" | "natNetwork" | "natActive">;

const OWNER = /^[A-Za-z0-9._/:-]{1,400}$/;

/**
 * Completes a checked guest: its owner, its installed settings and its files (the xl config plus `extraFiles`),
 * unknown while anything they depend on is unknown (preview).
 */
export function completeGuest(
  raw: Record<string, unknown>,
  c: Checker,
  base: GuestBase,
  net: GuestNetworkPart,
  extraFiles: (g: Omit<GuestInputs, "files">) => Record<string, string> = () => ({}),
): Omit<GuestInputs, "connection" | "credentials" | "xenEstateVersion"> {
  const owner =
    c.string(raw, "owner", {
      pattern: OWNER,
      rule: "must be letters, digits and `._/:-` (the resource's owner tag)",
    }) ?? null;
  const g = { ...base, ...net, owner, guestSettings: UNKNOWN as unknown as GuestInputs["guestSettings"] };
  g.guestSettings = base.install === (UNKNOWN as unknown) ? g.guestSettings : guestSettingsOf(g);
  const files = renderedFiles(g, (known) => ({
    ...extraFiles(known as Omit<GuestInputs, "files">),
    [configPath(known.name)]: renderGuestConfig(known as GuestInputs),
  }));
  return { ...g, files };
}

/**
 * A guest's state from 0.1.0: no owner tag (its config has none either), the NAT in place as far as it knew, the
 * installed settings those its inputs imply (so an upgrade rewrites nothing inside a guest), a mirror without
 * credentials.
 */
function migrateGuest(old: Record<string, unknown>): Record<string, unknown> {
  const g = old as unknown as GuestInputs;
  const install = g.install?.debootstrap
    ? {
        ...g.install,
        debootstrap: {
          ...{ mirrorUser: null, mirrorPassword: null, proxyUser: null, proxyPassword: null },
          ...(g.install.debootstrap as object),
        },
      }
    : g.install;
  const migrated = {
    owner: null,
    natActive: g.natNetwork ? true : null,
    ...old,
    install,
  } as unknown as GuestInputs;
  return { guestSettings: guestSettingsOf(migrated), ...(migrated as unknown as Record<string, unknown>) };
}

/** The kind of a guest whose network `checkNetwork` validates. */
export function guestKind(
  name: string,
  check: Kind<GuestInputs, GuestOutputs>["check"],
): Kind<GuestInputs, GuestOutputs> {
  return {
    name,
    replaceOn: GUEST_REPLACE_ON,
    changeClasses: GUEST_CHANGES,
    changeNotes: GUEST_CHANGE_NOTES,
    schemaVersion: 2,
    migrate: migrateGuest,
    // Outputs record the install's passwords as digests: compare digests.
    diffView: (p) =>
      p.install && typeof p.install === "object"
        ? { ...p, install: recordedInstall(p as unknown as Pick<GuestInputs, "install">) }
        : p,
    ...guestLifecycle,
    check,
  };
}
