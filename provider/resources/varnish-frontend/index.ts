/**
 * VarnishFrontend: Varnish 7 on the dom0 routes HTTP by Host header to guests behind its NAT. See ./kind.ts for how
 * changes reach the running varnishd.
 */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import { varnishFrontendKind } from "./kind";
import type { VarnishFrontendArgs, VarnishSite } from "./plan";

export { varnishFrontendKind };
export type { VarnishFrontendInputs, VarnishFrontendOutputs } from "./kind";
export type { VarnishFrontendArgs, VarnishSiteArgs, VarnishHealthCheckArgs, VarnishSite } from "./plan";
export {
  hostCondition,
  renderVcl,
  renderDropIn,
  VARNISH_VCL,
  VARNISH_DROP_IN,
  VARNISH_VALIDATE,
} from "./plan";
export { reloadScript } from "./scripts";

/** Varnish on a host routing HTTP by Host header to the estate's guests. */
export class VarnishFrontend extends defineResource<VarnishFrontendArgs>({
  name: varnishFrontendKind.name,
  outputOnly: varnishFrontendKind.outputOnly ?? [],
}) {
  declare readonly sites: pulumi.Output<VarnishSite[]>;
  declare readonly listen: pulumi.Output<string[]>;
  /** Files it owns on the host (path → content). */
  declare readonly files: pulumi.Output<Record<string, string>>;
  /** The VCL Varnish runs now. */
  declare readonly activeVcl: pulumi.Output<string | null>;
}
