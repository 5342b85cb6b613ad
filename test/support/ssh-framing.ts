/**
 * Where the packets of one direction of an SSH connection begin and end, read from the bytes on the wire: for a
 * test relay that must drop a connection between two packets (after a session's last data, before its closing
 * messages) rather than at a byte count that varies from run to run with how the data was cut into packets.
 *
 * Only ciphers that leave the packet length in the clear can be followed: AES-GCM (RFC 5647, as OpenSSH's
 * `aes128-gcm@openssh.com` and `aes256-gcm@openssh.com`; the length is authenticated, not encrypted). A server
 * under test offers only those (`Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com`).
 */

/** The tag each AES-GCM packet ends with. */
const GCM_TAG = 16;
/** SSH_MSG_NEWKEYS: the packets after it are encrypted. */
const NEWKEYS = 21;

/**
 * The sizes on the wire, under AES-GCM, of the messages an OpenSSH server ends a session channel with: CHANNEL_EOF
 * and CHANNEL_CLOSE (36 bytes each, CLOSE last) once the command's output is all sent, and the `exit-status` request
 * (52) as soon as the command has exited, which may be before its last output or after it.
 */
const EOF_OR_CLOSE = 36;
const EXIT_STATUS = 52;

/** Follows one direction of an SSH connection from its first byte. */
export class SshPacketFraming {
  /** Bytes fed so far. */
  seen = 0;
  /** Every complete packet so far: its offset in the stream and its size on the wire. */
  readonly packets: { at: number; size: number }[] = [];
  private rest: Buffer = Buffer.alloc(0);
  private state: "version" | "clear" | "gcm" = "version";

  /** Takes the next bytes of the stream. */
  feed(chunk: Buffer): void {
    this.seen += chunk.length;
    this.rest = this.rest.length === 0 ? chunk : Buffer.concat([this.rest, chunk]);
    for (;;) {
      const at = this.seen - this.rest.length;
      if (this.state === "version") {
        // RFC 4253 4.2: lines before the version line may come; the version line starts with "SSH-".
        const nl = this.rest.indexOf(0x0a);
        if (nl < 0) return;
        if (this.rest.subarray(0, 4).toString("latin1") === "SSH-") this.state = "clear";
        this.rest = this.rest.subarray(nl + 1);
        continue;
      }
      if (this.rest.length < 6) return;
      const size = 4 + this.rest.readUInt32BE(0) + (this.state === "gcm" ? GCM_TAG : 0);
      if (this.rest.length < size) return;
      if (this.state === "clear" && this.rest[5] === NEWKEYS) this.state = "gcm";
      this.packets.push({ at, size });
      this.rest = this.rest.subarray(size);
    }
  }

  /**
   * The session's closing messages, when the bytes seen so far end with them: whole packets, the last one
   * CLOSE-sized, in a run of closing-sized packets (two of EOF's and CLOSE's size, and the exit status's when it came
   * after the last output) reaching back to the last packet of another size (the last output). `at`: where the run
   * starts in the stream; `exitStatus`: whether the exit status is in it. Undefined until then.
   */
  closing(): { at: number; exitStatus: boolean } | undefined {
    const p = this.packets;
    if (this.state !== "gcm" || this.rest.length > 0 || p.at(-1)?.size !== EOF_OR_CLOSE) return undefined;
    let first = p.length;
    while (first > 0 && [EOF_OR_CLOSE, EXIT_STATUS].includes(p[first - 1]!.size)) first--;
    const run = p.slice(first);
    if (run.filter((q) => q.size === EOF_OR_CLOSE).length < 2) return undefined;
    return { at: run[0]!.at, exitStatus: run.some((q) => q.size === EXIT_STATUS) };
  }
}
