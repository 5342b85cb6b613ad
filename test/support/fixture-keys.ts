/** The throwaway keys committed under test/fixtures/keys, for tests that need well-formed ones offline. */
import * as fs from "node:fs";
import * as path from "node:path";
import { repoPath } from "./repo";

const dir = repoPath("test", "fixtures", "keys");
const read = (name: string): string => fs.readFileSync(path.join(dir, name), "utf8");

export const fixtureKeys = {
  /** A host public key line (`ssh-ed25519 AAAA… fixture`). */
  hostPublicKey: read("host_ed25519.pub").trim(),
  /** Its fingerprint, as `ssh-keygen -lf` printed it. */
  hostFingerprint: read("host_ed25519.fingerprint").trim(),
  /** A client private key (OpenSSH format, no passphrase). */
  clientPrivateKey: read("client_ed25519"),
  /** Its public key line. */
  clientPublicKey: read("client_ed25519.pub").trim(),
};
