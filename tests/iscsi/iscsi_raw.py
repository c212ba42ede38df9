#!/usr/bin/python3
"""Raw-socket iSCSI client: login, SCSI commands and malformed PDUs, per RFC 7143.

Usage:
  iscsi_raw.py malformed --portal HOST:PORT --target IQN [--lun N] [--pid PID]
               [--chap-target IQN --chap-user U --chap-secret S]
               [--mutual-target IQN --mutual-initiator U:S --mutual-target-credentials U:S]
               [--filter WORD]
  iscsi_raw.py write-protect --portal HOST:PORT --target IQN [--lun N]
  iscsi_raw.py xcopy --portal HOST:PORT --target IQN --dest IQN --blocks N
               [--source-lba L] [--dest-lba L] [--segment-blocks N] [--expect-sense KEY/ASC/ASCQ]
  iscsi_raw.py sanitize --portal HOST:PORT --target IQN [--lun N]
  iscsi_raw.py selftest                        (CRC32C against RFC 7143's example vectors)

tests/iscsi/test-malformed.sh runs `malformed` against a Strata daemon (--pid is the daemon,
whose liveness and VmRSS are checked); tests/iscsi/test-chap.sh runs `write-protect` against a
snapshot target; tests/iscsi/test-xcopy.sh and bench/run-xcopy.sh run `xcopy`; `sanitize` times
one SANITIZE OVERWRITE of the whole LUN with the all-zero pattern libiscsi's Sanitize.Reset
sends (the measurement docs/PROTOCOLS.md, "Conformance", sizes that test's volume by). Python standard library only: every byte on the wire is built here, so what is
checked is the target, not an initiator library.

`malformed` first logs in (security stage with AuthMethod=None, then the operational stage)
and writes a pattern to the first 64 KiB of the LUN. Then it runs each case on connections of
its own; after every case a fresh session on a new connection must log in, answer INQUIRY and
read the pattern back, and the daemon must still be alive ("other sessions unaffected, no
crash"). Prints one `ok`/`FAIL` line per check and a summary; exits 1 if any check failed.

What each case expects (RFC 7143 sections; a connection close is always an allowed answer to
a malformed PDU at ErrorRecoveryLevel=0, silence is not, except where the RFC asks for it):
  positive            login, INQUIRY, READ CAPACITY(16), WRITE(10)+READ(10) with immediate data
                      and R2T, NOP-Out ping echo, Logout (§11.14, §11.18, §11.7-11.8)
  small-mrdsl         with our MaxRecvDataSegmentLength at 4096, a 128 KiB READ(10) comes back
                      in Data-In PDUs of at most 4096 bytes (checked on every PDU of every
                      session: never more than we declared, 8192 during login) (§13.12)
  discovery           SendTargets=All in a discovery session lists the target (§11.10, App. C)
  header-digest-ok    HeaderDigest=CRC32C negotiated; every target PDU's digest verified (§13.1)
  header-digest-bad   a NOP-Out with a wrong header digest gets no answer: the PDU is discarded
                      or the connection closed (§7.8)
  data-digest-bad     a WRITE whose immediate data has a wrong data digest: Reject reason 0x02 or
                      close, and the data does not reach the LUN (§7.8, §11.17.1)
  unknown-opcode      opcodes 0x0f, 0x1a and a target opcode (0x21): Reject (reason 0x04, 0x05 or
                      0x09) carrying the rejected header, or close; after a Reject the session
                      still works (§11.17)
  truncated-*         half a BHS, or a data segment cut short, then close: nothing breaks
  dsl-over-max        a NOP-Out whose DataSegmentLength exceeds the target's declared
                      MaxRecvDataSegmentLength: Reject or close, never an echo (§13.12)
  dsl-huge            DataSegmentLength 0xFFFFFF with no data following: Reject or close
                      within 5 s (a target that waits for 16 MiB it said it cannot take is wrong)
  cmdsn-window        non-immediate commands with CmdSN above MaxCmdSN or below ExpCmdSN get no
                      response; the session then goes on with the expected CmdSN (§4.2.2.1)
  ahs-large           a TEST UNIT READY with TotalAHSLength=255 (1020 bytes of reserved-type AHS):
                      close, or a Reject or SCSI Response after which the same session still
                      answers INQUIRY (the target consumed exactly the AHS) (§11.2.1.2)
  ahs-length-lie      TotalAHSLength=255 but no AHS bytes, then close
  login-chap          correct CHAP response logs in; a wrong one gets status 0x0201; no CHAP
                      offer to a CHAP target gets class 0x02 (§12.1.3, §11.13.5)
  login-chap-mutual   mutual CHAP: the target's CHAP_N/CHAP_R checked here (MD5 of identifier,
                      secret, challenge), a wrong expectation caught; our CHAP_I/CHAP_C copied
                      from the target's challenge (reflection) gets a close or class 0x02
                      (§12.1.3: "Responders MUST check for this condition")
  login-garbage-text  a Login PDU whose text is not key=value: login failure (class != 0) or
                      close, never a full-feature session (§6.1)
  login-huge-text     a 64 KiB Login text (over the 8192-byte login MaxRecvDataSegmentLength):
                      failure or close; any Login Response carries at most 8192 bytes (§13.12)
  login-unknown-target status 0x0203 (Not found)
  scsi-before-login   a SCSI Command as the first PDU: close, Reject or login failure
  idle-connections    1000 connections, or 64 fewer than the daemon's open-files limit (half
                      idle, half stopped mid-BHS): a fresh session works while they are open;
                      the daemon's VmRSS grows by less than 200 MiB
"""

import argparse
import hashlib
import os
import random
import resource
import socket
import struct
import sys
import time
import traceback

# --- CRC32C (Castagnoli, reflected 0x82F63B78), as RFC 7143 §13.1 digests use it ------------

_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def digest(data):
    """The 4 digest bytes as they go on the wire (RFC 7143 appendix examples: 32 zero bytes -> aa 36 91 8a)."""
    return struct.pack("<I", crc32c(data))


def selftest():
    vectors = [
        (bytes(32), "aa36918a"),
        (b"\xff" * 32, "43aba862"),
        (bytes(range(32)), "4e79dd46"),
    ]
    for data, wire in vectors:
        got = digest(data).hex()
        if got != wire:
            sys.exit("crc32c self-test: got %s, want %s" % (got, wire))
    print("crc32c self-test ok")


# --- RFC 7143 constants -------------------------------------------------------------------

OP_NOP_OUT, OP_SCSI_CMD, OP_TMF_REQ, OP_LOGIN_REQ, OP_TEXT_REQ, OP_DATA_OUT, OP_LOGOUT_REQ = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_NOP_IN, OP_SCSI_RSP, OP_TMF_RSP, OP_LOGIN_RSP, OP_TEXT_RSP, OP_DATA_IN, OP_LOGOUT_RSP = 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26
OP_R2T, OP_ASYNC, OP_REJECT = 0x31, 0x32, 0x3F
OP_NAMES = {0x20: "NOP-In", 0x21: "SCSI Response", 0x22: "TMF Response", 0x23: "Login Response",
            0x24: "Text Response", 0x25: "Data-In", 0x26: "Logout Response", 0x31: "R2T",
            0x32: "Async Message", 0x3F: "Reject"}
NO_TAG = 0xFFFFFFFF
BLOCKS_PATTERN = 128  # 64 KiB at 512-byte blocks (recomputed from the block size)
INITIATOR = "iqn.2026-11.org.strata:raw-client"


class Closed(Exception):
    pass


class Rejected(Exception):
    def __init__(self, pdu):
        super().__init__("Reject reason 0x%02x" % pdu.bhs[2])
        self.pdu = pdu
        self.reason = pdu.bhs[2]


class ProtocolViolation(Exception):
    pass


def hx(data, limit=64):
    text = data[:limit].hex(" ")
    return text + (" ..." if len(data) > limit else "")


class PDU:
    def __init__(self, bhs, ahs=b"", data=b""):
        self.bhs = bhs
        self.ahs = ahs
        self.data = data

    @property
    def opcode(self):
        return self.bhs[0] & 0x3F

    @property
    def name(self):
        return OP_NAMES.get(self.opcode, "opcode 0x%02x" % self.opcode)

    def u32(self, offset):
        return struct.unpack_from(">I", self.bhs, offset)[0]

    @property
    def itt(self):
        return self.u32(16)

    def __repr__(self):
        return "%s bhs=[%s] data=%d bytes" % (self.name, hx(self.bhs, 48), len(self.data))


def bhs(opcode, flags=0, b2=0, b3=0, ahs_words=0, dsl=0, lun=0, itt=0, fields=b"", immediate=False):
    """A 48-byte BHS. `fields` fills bytes 20..47 (opcode-specific)."""
    header = bytearray(48)
    header[0] = (0x40 if immediate else 0) | (opcode & 0x3F)
    header[1] = flags
    header[2] = b2
    header[3] = b3
    header[4] = ahs_words
    header[5:8] = dsl.to_bytes(3, "big")
    header[8:16] = lun_bytes(lun) if isinstance(lun, int) else lun
    struct.pack_into(">I", header, 16, itt)
    header[20:20 + len(fields)] = fields
    return bytes(header)


def lun_bytes(lun):
    # SAM single-level LUN, peripheral device addressing for LUN < 256 (RFC 7143 §11.2.1.3 refers to SAM).
    return bytes([0, lun, 0, 0, 0, 0, 0, 0]) if lun < 256 else bytes([0x40 | (lun >> 8), lun & 0xFF]) + bytes(6)


def pad4(length):
    return (4 - length % 4) % 4


def text_bytes(pairs):
    return b"".join(("%s=%s" % (k, v)).encode() + b"\0" for k, v in pairs)


def parse_text(data):
    result = {}
    for item in data.split(b"\0"):
        if not item:
            continue
        key, _, value = item.partition(b"=")
        result[key.decode(errors="replace")] = value.decode(errors="replace")
    return result


class Connection:
    def __init__(self, portal, timeout=10.0):
        host, port = portal.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.header_digest = False
        self.data_digest = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, header, data=b"", ahs=b"", bad_header_digest=False, bad_data_digest=False):
        wire = bytearray(header + ahs)
        if self.header_digest:
            d = digest(header + ahs)
            if bad_header_digest:
                d = bytes([d[0] ^ 0xFF]) + d[1:]
            wire += d
        if data:
            padded = data + bytes(pad4(len(data)))
            wire += padded
            if self.data_digest:
                d = digest(padded)
                if bad_data_digest:
                    d = bytes([d[0] ^ 0xFF]) + d[1:]
                wire += d
        self.sock.sendall(bytes(wire))

    def recv_exact(self, count, timeout=None):
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        chunks = []
        remaining = count
        while remaining:
            try:
                chunk = self.sock.recv(remaining)
            except ConnectionResetError:
                raise Closed("connection reset")
            if not chunk:
                raise Closed("connection closed after %d of %d bytes" % (count - remaining, count))
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def recv(self, timeout=None):
        header = self.recv_exact(48, timeout)
        ahs_len = header[4] * 4
        dsl = int.from_bytes(header[5:8], "big")
        ahs = self.recv_exact(ahs_len) if ahs_len else b""
        if self.header_digest:
            got = self.recv_exact(4)
            want = digest(header + ahs)
            if got != want:
                raise ProtocolViolation("target header digest %s, computed %s, header [%s]" % (got.hex(), want.hex(), hx(header, 48)))
        data = b""
        if dsl:
            padded = self.recv_exact(dsl + pad4(dsl))
            if self.data_digest:
                got = self.recv_exact(4)
                want = digest(padded)
                if got != want:
                    raise ProtocolViolation("target data digest %s, computed %s" % (got.hex(), want.hex()))
            data = padded[:dsl]
        return PDU(header, ahs, data)

    def wait_closed_or_pdu(self, seconds):
        """Returns ('closed', None), ('quiet', None) or ('pdu', PDU) within `seconds`."""
        try:
            return "pdu", self.recv(timeout=seconds)
        except Closed:
            return "closed", None
        except socket.timeout:
            return "quiet", None
        except OSError:
            return "closed", None


class Session:
    """One connection of one session, full feature phase after login()."""

    def __init__(self, portal, target, lun=0, timeout=10.0):
        self.portal = portal
        self.target = target
        self.lun = lun
        self.conn = Connection(portal, timeout)
        self.isid = bytes([0x80]) + os.urandom(5)
        self.itt = random.randrange(1, 1 << 20)
        self.cmdsn = 1
        self.exp_statsn = 0
        self.max_cmdsn = 1
        self.exp_cmdsn = 1
        self.params = {}
        self.own_mrdsl = 8192  # what we declared; the default 8192 during login (§13.12)
        self.target_mrdsl = 8192
        self.first_burst = 65536
        self.max_burst = 262144
        self.immediate_data = False
        self.initial_r2t = True
        self.block_size = 512
        self.blocks = 0

    def close(self):
        self.conn.close()

    def next_itt(self):
        self.itt = (self.itt + 1) & 0x7FFFFFFF or 1
        return self.itt

    def track(self, pdu):
        """Updates ExpStatSN, ExpCmdSN and MaxCmdSN from a target PDU (RFC 7143 §4.2.2.2, §11.7.4, §11.19)."""
        op = pdu.opcode
        unsolicited_nop = op == OP_NOP_IN and pdu.itt == NO_TAG  # StatSN is not advanced for these
        carries_status = op in (OP_SCSI_RSP, OP_NOP_IN, OP_TMF_RSP, OP_TEXT_RSP, OP_LOGOUT_RSP, OP_REJECT,
                                OP_LOGIN_RSP, OP_ASYNC) or (op == OP_DATA_IN and pdu.bhs[1] & 0x01)
        if carries_status and not unsolicited_nop:
            self.exp_statsn = (pdu.u32(24) + 1) & 0xFFFFFFFF
        if op in (OP_SCSI_RSP, OP_NOP_IN, OP_TMF_RSP, OP_TEXT_RSP, OP_LOGOUT_RSP, OP_REJECT, OP_LOGIN_RSP,
                  OP_DATA_IN, OP_R2T, OP_ASYNC):
            self.exp_cmdsn = pdu.u32(28)
            self.max_cmdsn = pdu.u32(32)

    def recv(self, timeout=None):
        while True:
            pdu = self.conn.recv(timeout)
            if len(pdu.data) > self.own_mrdsl:
                raise ProtocolViolation("%s with a %d-byte data segment, over our MaxRecvDataSegmentLength %d (§13.12)"
                                        % (pdu.name, len(pdu.data), self.own_mrdsl))
            self.track(pdu)
            if pdu.opcode == OP_NOP_IN and pdu.itt == NO_TAG and pdu.u32(20) != NO_TAG:
                # A target ping (§11.19): answer with the same TTT, as an immediate NOP-Out.
                self.conn.send(bhs(OP_NOP_OUT, 0x80, lun=pdu.bhs[8:16], itt=NO_TAG,
                                   fields=struct.pack(">III", pdu.u32(20), self.cmdsn, self.exp_statsn), immediate=True))
                continue
            if pdu.opcode == OP_ASYNC:
                continue
            return pdu

    # --- login ----------------------------------------------------------------------------

    def login_pdu(self, transit, csg, nsg, pairs, itt, raw_text=None, tsih=0):
        data = raw_text if raw_text is not None else text_bytes(pairs)
        flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        header = bytearray(bhs(OP_LOGIN_REQ, flags, 0, 0, dsl=len(data), lun=self.isid + struct.pack(">H", tsih), itt=itt,
                               fields=struct.pack(">HHII", 0, 0, self.cmdsn, self.exp_statsn), immediate=True))
        return bytes(header), data

    def login_exchange(self, transit, csg, nsg, pairs, raw_text=None):
        itt = self.next_itt() if not hasattr(self, "login_itt") else self.login_itt
        self.login_itt = itt
        header, data = self.login_pdu(transit, csg, nsg, pairs, itt, raw_text)
        self.conn.send(header, data)
        pdu = self.recv()
        if pdu.opcode != OP_LOGIN_RSP:
            raise ProtocolViolation("expected a Login Response, got %r" % pdu)
        if len(pdu.data) > 8192:
            # The initiator's MaxRecvDataSegmentLength is the default 8192 during login (§13.12).
            raise ProtocolViolation("Login Response with a %d-byte data segment (at most 8192 during login)" % len(pdu.data))
        status = (pdu.bhs[36] << 8) | pdu.bhs[37]
        return pdu, status, parse_text(pdu.data)

    def login(self, session_type="Normal", chap=None, mutual=None, header_digest="None", data_digest="None",
              extra=(), expect_status=0, mrdsl=262144, reflect=False):
        """Logs in; returns the final login status (0 on success). With chap=(user, secret)."""
        security = [("InitiatorName", INITIATOR), ("SessionType", session_type)]
        if session_type == "Normal":
            security.append(("TargetName", self.target))
        security.append(("AuthMethod", "CHAP,None" if chap else "None"))
        pdu, status, keys = self.login_exchange(chap is None, 0, 1, security)
        if status:
            return status
        if chap:
            if keys.get("AuthMethod") != "CHAP":
                raise ProtocolViolation("target chose AuthMethod=%s, wanted CHAP" % keys.get("AuthMethod"))
            pdu, status, keys = self.login_exchange(False, 0, 1, [("CHAP_A", "5")])
            if status:
                return status
            if keys.get("CHAP_A") != "5" or "CHAP_I" not in keys or "CHAP_C" not in keys:
                raise ProtocolViolation("CHAP challenge missing: %r" % keys)
            identifier = int(keys["CHAP_I"], 0)
            challenge = bytes.fromhex(keys["CHAP_C"][2:]) if keys["CHAP_C"].lower().startswith("0x") else None
            if challenge is None:
                raise ProtocolViolation("CHAP_C not hex: %r" % keys["CHAP_C"])
            user, secret = chap
            response = hashlib.md5(bytes([identifier]) + secret.encode() + challenge).hexdigest()
            answer = [("CHAP_N", user), ("CHAP_R", "0x" + response)]
            mutual_id = mutual_challenge = None
            if mutual:
                mutual_id = random.randrange(256)
                mutual_challenge = os.urandom(16)
                if reflect:  # the target's own identifier and challenge sent back (§12.1.3)
                    mutual_id, mutual_challenge = identifier, challenge
                answer += [("CHAP_I", str(mutual_id)), ("CHAP_C", "0x" + mutual_challenge.hex())]
            pdu, status, keys = self.login_exchange(True, 0, 1, answer)
            if status:
                return status
            if mutual:
                want = hashlib.md5(bytes([mutual_id]) + mutual[1].encode() + mutual_challenge).hexdigest()
                if keys.get("CHAP_N") != mutual[0] or keys.get("CHAP_R", "").lower() != "0x" + want:
                    raise ProtocolViolation("mutual CHAP: target answered %r" % keys)
        # The target may want another security round before it transits (T=1 back).
        for _ in range(4):
            if pdu.bhs[1] & 0x80 and (pdu.bhs[1] & 0x03) == 1:
                break
            pdu, status, keys = self.login_exchange(True, 0, 1, [])
            if status:
                return status
        else:
            raise ProtocolViolation("target never left the security stage")
        operational = [("HeaderDigest", header_digest), ("DataDigest", data_digest),
                       ("MaxRecvDataSegmentLength", str(mrdsl)), ("ErrorRecoveryLevel", "0")]
        if session_type == "Normal":
            operational += [("InitialR2T", "Yes"), ("ImmediateData", "Yes"), ("MaxBurstLength", "262144"),
                            ("FirstBurstLength", "65536"), ("MaxConnections", "1"), ("DataPDUInOrder", "Yes"),
                            ("DataSequenceInOrder", "Yes"), ("MaxOutstandingR2T", "1"),
                            ("DefaultTime2Wait", "2"), ("DefaultTime2Retain", "0")]
        operational += list(extra)
        negotiated = {}
        pairs = operational
        for _ in range(6):
            pdu, status, keys = self.login_exchange(True, 1, 3, pairs)
            if status:
                return status
            negotiated.update(keys)
            if pdu.bhs[1] & 0x80 and (pdu.bhs[1] & 0x03) == 3:
                break
            pairs = []  # keep offering transit with nothing new
        else:
            raise ProtocolViolation("target never transited to full feature phase; last keys %r" % negotiated)
        self.params = negotiated
        self.own_mrdsl = mrdsl
        self.tsih = struct.unpack_from(">H", pdu.bhs, 14)[0]
        self.target_mrdsl = int(negotiated.get("MaxRecvDataSegmentLength", "8192"))
        self.first_burst = min(65536, int(negotiated.get("FirstBurstLength", "65536")))
        self.max_burst = min(262144, int(negotiated.get("MaxBurstLength", "262144")))
        self.immediate_data = negotiated.get("ImmediateData", "Yes") == "Yes"
        self.initial_r2t = negotiated.get("InitialR2T", "Yes") != "No"
        self.conn.header_digest = negotiated.get("HeaderDigest", "None") == "CRC32C"
        self.conn.data_digest = negotiated.get("DataDigest", "None") == "CRC32C"
        self.cmdsn = self.exp_cmdsn
        return 0

    # --- full feature phase -----------------------------------------------------------------

    def scsi(self, cdb, read_length=0, write_data=b"", immediate=False, cmdsn=None, timeout=None):
        """Runs one SCSI command; returns (status, sense bytes, data read). A UNIT ATTENTION (a new
        session's power-on/reset notice, SAM-5 §5.14) is consumed and the command sent again, as
        initiators do."""
        for _ in range(3):
            status, sense, data = self.scsi_once(cdb, read_length, write_data, immediate, cmdsn, timeout)
            if not (status == 2 and sense_key(sense)[0] == 0x6):
                break
        return status, sense, data

    def scsi_once(self, cdb, read_length=0, write_data=b"", immediate=False, cmdsn=None, timeout=None):
        itt = self.next_itt()
        flags = 0x80 | (0x40 if read_length else 0) | (0x20 if write_data else 0) | 0x01
        edtl = read_length or len(write_data)
        immediate_data = b""
        if write_data and self.immediate_data:
            immediate_data = write_data[:min(self.first_burst, self.target_mrdsl)]
        sn = self.cmdsn if cmdsn is None else cmdsn
        header = bhs(OP_SCSI_CMD, flags, dsl=len(immediate_data), lun=self.lun, itt=itt,
                     fields=struct.pack(">III", edtl, sn, self.exp_statsn) + cdb.ljust(16, b"\0"), immediate=immediate)
        if cmdsn is None and not immediate:
            self.cmdsn = (self.cmdsn + 1) & 0xFFFFFFFF
        self.conn.send(header, immediate_data)
        return self.complete(itt, read_length, write_data, len(immediate_data), timeout)

    def complete(self, itt, read_length, write_data, sent, timeout=None):
        data = bytearray(read_length)
        received = 0
        while True:
            pdu = self.recv(timeout)
            if pdu.opcode == OP_REJECT:
                raise Rejected(pdu)
            if pdu.itt != itt:
                raise ProtocolViolation("PDU for ITT 0x%x while waiting for 0x%x: %r" % (pdu.itt, itt, pdu))
            if pdu.opcode == OP_DATA_IN:
                offset = pdu.u32(40)
                if offset + len(pdu.data) > read_length:
                    raise ProtocolViolation("Data-In beyond the expected length: offset %d + %d > %d" % (offset, len(pdu.data), read_length))
                data[offset:offset + len(pdu.data)] = pdu.data
                received += len(pdu.data)
                if pdu.bhs[1] & 0x01:
                    return pdu.bhs[3], b"", bytes(data[:received])
            elif pdu.opcode == OP_R2T:
                ttt, offset, length = pdu.u32(20), pdu.u32(40), pdu.u32(44)
                if offset + length > len(write_data):
                    raise ProtocolViolation("R2T beyond the data: offset %d length %d of %d" % (offset, length, len(write_data)))
                datasn = 0
                position = offset
                while position < offset + length:
                    chunk = write_data[position:min(position + self.target_mrdsl, offset + length)]
                    final = position + len(chunk) >= offset + length
                    self.conn.send(bhs(OP_DATA_OUT, 0x80 if final else 0, dsl=len(chunk), lun=self.lun, itt=itt,
                                       fields=struct.pack(">IIIIII", ttt, 0, self.exp_statsn, 0, datasn, position)), chunk)
                    datasn += 1
                    position += len(chunk)
            elif pdu.opcode == OP_SCSI_RSP:
                status = pdu.bhs[3]
                if pdu.bhs[2] != 0:
                    raise ProtocolViolation("SCSI Response with iSCSI response 0x%02x" % pdu.bhs[2])
                sense = b""
                if len(pdu.data) >= 2:
                    sense_length = struct.unpack_from(">H", pdu.data, 0)[0]
                    sense = pdu.data[2:2 + sense_length]
                return status, sense, bytes(data[:received])
            else:
                raise ProtocolViolation("unexpected %r" % pdu)

    def nop(self, payload=b"", timeout=None):
        itt = self.next_itt()
        self.conn.send(bhs(OP_NOP_OUT, 0x80, dsl=len(payload), itt=itt,
                           fields=struct.pack(">III", NO_TAG, self.cmdsn, self.exp_statsn), immediate=True), payload)
        pdu = self.recv(timeout)
        if pdu.opcode != OP_NOP_IN or pdu.itt != itt:
            raise ProtocolViolation("NOP-Out ping answered by %r" % pdu)
        return pdu

    def text(self, pairs):
        itt = self.next_itt()
        data = text_bytes(pairs)
        self.conn.send(bhs(OP_TEXT_REQ, 0x80, dsl=len(data), itt=itt,
                           fields=struct.pack(">III", NO_TAG, self.cmdsn, self.exp_statsn), immediate=True), data)
        pdu = self.recv()
        if pdu.opcode != OP_TEXT_RSP:
            raise ProtocolViolation("Text Request answered by %r" % pdu)
        return pdu.data

    def logout(self):
        itt = self.next_itt()
        self.conn.send(bhs(OP_LOGOUT_REQ, 0x80, itt=itt, fields=struct.pack(">III", 0, self.cmdsn, self.exp_statsn),
                           immediate=True))
        pdu = self.recv()
        if pdu.opcode != OP_LOGOUT_RSP:
            raise ProtocolViolation("Logout answered by %r" % pdu)
        return pdu.bhs[2]

    # --- SCSI helpers ------------------------------------------------------------------------

    def inquiry(self):
        status, sense, data = self.scsi(bytes([0x12, 0, 0, 0, 96, 0]), read_length=96)
        return status, sense, data

    def read_capacity16(self):
        status, sense, data = self.scsi(bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2), read_length=32)
        if status == 0:
            last, self.block_size = struct.unpack_from(">QI", data, 0)
            self.blocks = last + 1
        return status, sense, data

    def read10(self, lba, blocks):
        return self.scsi(struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0), read_length=blocks * self.block_size)

    def write10(self, lba, data, fua=False):
        blocks = len(data) // self.block_size
        return self.scsi(struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, blocks, 0), write_data=data)


def sense_key(sense):
    if len(sense) < 3:
        return None, None, None
    code = sense[0] & 0x7F
    if code in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2], sense[3] if len(sense) > 3 else None
    return sense[2] & 0x0F, sense[12] if len(sense) > 12 else None, sense[13] if len(sense) > 13 else None


# --- the checks --------------------------------------------------------------------------

class Runner:
    def __init__(self, args):
        self.args = args
        self.failures = 0
        self.passed = 0
        self.pattern = None

    def ok(self, what):
        self.passed += 1
        print("ok    %s" % what)

    def fail(self, what):
        self.failures += 1
        print("FAIL  %s" % what)

    def expect(self, condition, what):
        (self.ok if condition else self.fail)(what)
        return condition

    def session(self, target=None, **login):
        s = Session(self.args.portal, target or self.args.target, self.args.lun)
        status = s.login(**login)
        if status:
            s.close()
            raise ProtocolViolation("login to %s failed with status 0x%04x" % (target or self.args.target, status))
        return s

    def daemon_alive(self):
        if not self.args.pid:
            return True
        try:
            os.kill(self.args.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def rss_mib(self):
        with open("/proc/%d/status" % self.args.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmRSS")

    def fresh_session_ok(self, after):
        try:
            s = self.session()
            status, sense, data = s.inquiry()
            good = status == 0 and len(data) >= 36
            s.read_capacity16()
            status, sense, data = s.read10(0, len(self.pattern) // s.block_size)
            good = good and status == 0 and data == self.pattern
            s.logout()
            s.close()
            self.expect(good, "after %s: a fresh session logs in, answers INQUIRY and reads the pattern" % after)
        except Exception as error:
            self.fail("after %s: a fresh session failed: %s" % (after, describe(error)))
        self.expect(self.daemon_alive(), "after %s: the daemon is alive" % after)

    def run(self, name, case):
        if self.args.filter and self.args.filter not in name:
            return
        print("--- %s" % name)
        try:
            case()
        except Exception as error:
            self.fail("%s: %s" % (name, describe(error)))
        self.fresh_session_ok(name)


def describe(error):
    if isinstance(error, (Closed, Rejected, ProtocolViolation, socket.timeout, OSError)):
        return "%s: %s" % (type(error).__name__, error)
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def expect_reject_or_close(r, conn, what, reasons=(0x04, 0x05, 0x09), seconds=5.0, header=None):
    """A Reject with one of `reasons` (carrying the rejected header if given) or a close."""
    kind, pdu = conn.wait_closed_or_pdu(seconds)
    if kind == "closed":
        r.ok("%s: the target closed the connection" % what)
        return "closed"
    if kind == "quiet":
        r.fail("%s: no Reject and no close within %.0f s" % (what, seconds))
        return "quiet"
    if pdu.opcode == OP_REJECT:
        r.expect(pdu.bhs[2] in reasons, "%s: Reject reason 0x%02x (want one of %s)" % (what, pdu.bhs[2], ", ".join("0x%02x" % x for x in reasons)))
        if header is not None:
            r.expect(pdu.data[:48] == header, "%s: the Reject carries the rejected header (got [%s])" % (what, hx(pdu.data, 48)))
        return "reject"
    r.fail("%s: answered with %r" % (what, pdu))
    return "other"


def c_positive(r):
    s = r.session()
    status, sense, data = s.inquiry()
    r.expect(status == 0 and len(data) >= 36 and data[0] & 0x1F == 0, "INQUIRY: GOOD, direct-access device (byte 0 = 0x%02x)" % (data[0] if data else -1))
    status, sense, data = s.read_capacity16()
    r.expect(status == 0 and s.blocks > 0, "READ CAPACITY(16): %d blocks of %d bytes" % (s.blocks, s.block_size))
    blob = os.urandom(256 * 1024)  # 256 KiB: immediate data up to FirstBurstLength, then R2T + Data-Out
    lba = (1024 * 1024) // s.block_size
    status, sense, _ = s.write10(lba, blob)
    r.expect(status == 0, "WRITE(10) 256 KiB (immediate data + R2T): status 0x%02x sense %s" % (status, hx(sense)))
    status, sense, data = s.read10(lba, len(blob) // s.block_size)
    r.expect(status == 0 and data == blob, "READ(10) 256 KiB returns what was written")
    status, sense, data = s.read10(s.blocks, 1)
    key, asc, ascq = sense_key(sense)
    r.expect(status == 2 and key == 0x5 and asc == 0x21, "READ(10) beyond the end: CHECK CONDITION, ILLEGAL REQUEST, LBA OUT OF RANGE (got status 0x%02x sense %s/%s/%s)" % (status, key, asc, ascq))
    payload = os.urandom(1000)
    pdu = s.nop(payload)
    r.expect(pdu.data == payload, "NOP-Out ping with 1000 bytes is echoed")
    response = s.logout()
    r.expect(response == 0, "Logout: response 0x%02x" % response)
    s.close()


def c_small_mrdsl(r):
    s = r.session(mrdsl=4096)
    s.read_capacity16()
    blob = os.urandom(128 * 1024)
    lba = (3 * 1024 * 1024) // s.block_size
    status, _, _ = s.write10(lba, blob)
    r.expect(status == 0, "MaxRecvDataSegmentLength=4096: WRITE(10) 128 KiB")
    status, _, data = s.read10(lba, len(blob) // s.block_size)
    r.expect(status == 0 and data == blob, "MaxRecvDataSegmentLength=4096: READ(10) 128 KiB arrives in Data-In PDUs of at most 4096 bytes, intact")
    s.logout()
    s.close()


def c_discovery(r):
    s = Session(r.args.portal, None)
    status = s.login(session_type="Discovery")
    r.expect(status == 0, "discovery login: status 0x%04x" % status)
    data = s.text([("SendTargets", "All")])
    names = [v for k, v in (item.decode(errors="replace").partition("=")[::2] for item in data.split(b"\0") if item) if k == "TargetName"]
    r.expect(r.args.target in names, "SendTargets=All lists %s (got %s)" % (r.args.target, names))
    s.logout()
    s.close()


def c_header_digest_ok(r):
    s = r.session(header_digest="CRC32C", data_digest="CRC32C")
    if not r.expect(s.conn.header_digest and s.conn.data_digest, "HeaderDigest=CRC32C and DataDigest=CRC32C negotiated (target said %s, %s)" % (s.params.get("HeaderDigest"), s.params.get("DataDigest"))):
        return
    status, sense, data = s.inquiry()
    r.expect(status == 0, "INQUIRY with digests: every target digest verified")
    s.read_capacity16()
    status, sense, data = s.read10(0, len(r.pattern) // s.block_size)
    r.expect(status == 0 and data == r.pattern, "READ(10) with digests returns the pattern")
    s.logout()
    s.close()


def c_header_digest_bad(r):
    s = r.session(header_digest="CRC32C")
    if not r.expect(s.conn.header_digest, "HeaderDigest=CRC32C negotiated"):
        return
    itt = s.next_itt()
    s.conn.send(bhs(OP_NOP_OUT, 0x80, itt=itt, fields=struct.pack(">III", NO_TAG, s.cmdsn, s.exp_statsn), immediate=True),
                bad_header_digest=True)
    kind, pdu = s.conn.wait_closed_or_pdu(3.0)
    if kind == "pdu" and pdu.opcode == OP_NOP_IN and pdu.itt == itt:
        r.fail("NOP-Out with a bad header digest was answered (%r); it must be discarded" % pdu)
    elif kind == "pdu" and pdu.opcode != OP_REJECT:
        r.fail("NOP-Out with a bad header digest: unexpected %r" % pdu)
    else:
        r.ok("NOP-Out with a bad header digest: %s" % ("connection closed" if kind == "closed" else "discarded (no answer)" if kind == "quiet" else "Reject reason 0x%02x" % pdu.bhs[2]))
    s.close()


def c_data_digest_bad(r):
    s = r.session(header_digest="CRC32C", data_digest="CRC32C")
    if not r.expect(s.conn.data_digest, "DataDigest=CRC32C negotiated"):
        return
    s.read_capacity16()
    lba = (2 * 1024 * 1024) // s.block_size
    before_status, _, before = s.read10(lba, 8)
    blob = bytes([0xA5]) * (8 * s.block_size)
    itt = s.next_itt()
    header = bhs(OP_SCSI_CMD, 0xA1, dsl=len(blob), lun=s.lun, itt=itt,
                 fields=struct.pack(">III", len(blob), s.cmdsn, s.exp_statsn) + struct.pack(">BBIBHB", 0x2A, 0, lba, 0, 8, 0).ljust(16, b"\0"))
    s.cmdsn += 1
    if not s.immediate_data:
        r.fail("data-digest-bad needs ImmediateData=Yes; the target refused it")
        return
    s.conn.send(header, blob, bad_data_digest=True)
    kind, pdu = s.conn.wait_closed_or_pdu(5.0)
    if kind == "closed":
        r.ok("WRITE with a bad data digest: connection closed")
    elif kind == "pdu" and pdu.opcode == OP_REJECT:
        r.expect(pdu.bhs[2] == 0x02, "WRITE with a bad data digest: Reject reason 0x%02x (want 0x02, data digest error)" % pdu.bhs[2])
    elif kind == "pdu" and pdu.opcode == OP_R2T:
        r.ok("WRITE with a bad data digest: the target discarded the immediate data and asked for it again (R2T)")
    elif kind == "pdu" and pdu.opcode == OP_SCSI_RSP and pdu.bhs[3] != 0:
        r.ok("WRITE with a bad data digest: CHECK CONDITION (status 0x%02x)" % pdu.bhs[3])
    else:
        r.fail("WRITE with a bad data digest: %s %r" % (kind, pdu))
    s.close()
    t = r.session()
    t.read_capacity16()
    status, _, after = t.read10(lba, 8)
    r.expect(status == 0 and after != blob, "the data with the bad digest did not reach the LUN")
    t.logout()
    t.close()


def c_unknown_opcode(opcode):
    def case(r):
        s = r.session()
        itt = s.next_itt()
        header = bhs(opcode, 0x80, itt=itt, fields=struct.pack(">III", NO_TAG, s.cmdsn, s.exp_statsn), immediate=True)
        s.conn.send(header)
        outcome = expect_reject_or_close(r, s.conn, "opcode 0x%02x" % opcode, header=header)
        if outcome == "reject":
            status, _, _ = s.inquiry()
            r.expect(status == 0, "after the Reject, the same session still answers INQUIRY")
        s.close()
    return case


def c_truncated_bhs(r):
    s = r.session()
    s.conn.send_raw(bhs(OP_SCSI_CMD, 0x81, fields=struct.pack(">III", 0, s.cmdsn, s.exp_statsn) + bytes([0x00]))[:20])
    time.sleep(0.2)
    s.close()
    r.ok("sent 20 bytes of a BHS and closed")


def c_truncated_data(r):
    s = r.session()
    itt = s.next_itt()
    header = bhs(OP_SCSI_CMD, 0xA1, dsl=4096, lun=s.lun, itt=itt,
                 fields=struct.pack(">III", 4096, s.cmdsn, s.exp_statsn) + struct.pack(">BBIBHB", 0x2A, 0, 4096, 0, 8, 0).ljust(16, b"\0"))
    s.conn.send_raw(header + bytes(100))
    time.sleep(0.2)
    s.close()
    r.ok("sent a WRITE with 100 of its 4096 immediate bytes and closed")


def c_dsl_over_max(r):
    s = r.session()
    limit = s.target_mrdsl
    payload = os.urandom(limit + 4096)
    itt = s.next_itt()
    header = bhs(OP_NOP_OUT, 0x80, dsl=len(payload), itt=itt, fields=struct.pack(">III", NO_TAG, s.cmdsn, s.exp_statsn), immediate=True)
    try:
        s.conn.send(header, payload)
    except OSError:
        pass  # the target may close while we are still sending
    kind, pdu = s.conn.wait_closed_or_pdu(5.0)
    what = "NOP-Out with DataSegmentLength %d > MaxRecvDataSegmentLength %d" % (len(payload), limit)
    if kind == "closed":
        r.ok("%s: connection closed" % what)
    elif kind == "pdu" and pdu.opcode == OP_REJECT:
        r.expect(pdu.bhs[2] in (0x04, 0x09), "%s: Reject reason 0x%02x" % (what, pdu.bhs[2]))
    elif kind == "pdu" and pdu.opcode == OP_NOP_IN:
        r.fail("%s: echoed (%d bytes) instead of Reject or close" % (what, len(pdu.data)))
    else:
        r.fail("%s: %s %r" % (what, kind, pdu))
    s.close()


def c_dsl_huge(r):
    s = r.session()
    itt = s.next_itt()
    header = bhs(OP_NOP_OUT, 0x80, dsl=0xFFFFFF, itt=itt, fields=struct.pack(">III", NO_TAG, s.cmdsn, s.exp_statsn), immediate=True)
    s.conn.send_raw(header)
    expect_reject_or_close(r, s.conn, "NOP-Out declaring DataSegmentLength 0xFFFFFF (no data sent)", reasons=(0x04, 0x09))
    s.close()


def c_cmdsn_window(r):
    s = r.session()
    s.read_capacity16()
    status, _, _ = s.scsi(bytes(6))  # TEST UNIT READY in window, to know the window
    exp, maximum = s.exp_cmdsn, s.max_cmdsn
    r.expect(status == 0, "TEST UNIT READY with CmdSN %d: GOOD (ExpCmdSN %d, MaxCmdSN %d)" % (s.cmdsn - 1, exp, maximum))
    for label, sn in (("above MaxCmdSN", (maximum + 100) & 0xFFFFFFFF), ("below ExpCmdSN", (exp - 10) & 0xFFFFFFFF)):
        itt = s.next_itt()
        s.conn.send(bhs(OP_SCSI_CMD, 0x81, lun=s.lun, itt=itt, fields=struct.pack(">III", 0, sn, s.exp_statsn) + bytes(16)))
        kind, pdu = s.conn.wait_closed_or_pdu(2.0)
        if kind == "quiet":
            r.ok("TEST UNIT READY with CmdSN %d (%s): ignored, no response" % (sn, label))
        else:
            r.fail("TEST UNIT READY with CmdSN %d (%s): must be silently ignored (RFC 7143 §4.2.2.1), got %s %r" % (sn, label, kind, pdu))
            s.close()
            return
    status, _, data = s.read10(0, len(r.pattern) // s.block_size)
    r.expect(status == 0 and data == r.pattern, "the session goes on with CmdSN %d: READ(10) returns the pattern" % (s.cmdsn - 1))
    r.expect(s.exp_cmdsn == s.cmdsn, "ExpCmdSN %d counts only the in-window commands (want %d)" % (s.exp_cmdsn, s.cmdsn))
    s.logout()
    s.close()


def c_ahs_large(r):
    s = r.session()
    itt = s.next_itt()
    ahs = b""
    for _ in range(255 // 17):
        ahs += struct.pack(">HB", 64, 0) + bytes(1) + os.urandom(64)  # AHSLength 64, AHSType 0 (reserved)
    ahs = ahs.ljust(255 * 4, b"\0")
    header = bhs(OP_SCSI_CMD, 0x81, ahs_words=255, lun=s.lun, itt=itt, fields=struct.pack(">III", 0, s.cmdsn, s.exp_statsn) + bytes(16))
    s.cmdsn += 1
    s.conn.send(header, ahs=ahs)
    kind, pdu = s.conn.wait_closed_or_pdu(5.0)
    what = "TEST UNIT READY with TotalAHSLength 255 (1020 bytes of reserved-type AHS)"
    if kind == "closed":
        r.ok("%s: connection closed" % what)
    elif kind == "pdu" and pdu.opcode in (OP_REJECT, OP_SCSI_RSP):
        answer = "Reject reason 0x%02x" % pdu.bhs[2] if pdu.opcode == OP_REJECT else "SCSI Response status 0x%02x" % pdu.bhs[3]
        # The target kept the connection: it must have consumed exactly the 1020 AHS bytes.
        status, _, _ = s.inquiry()
        r.expect(status == 0, "%s: %s, then the same session answers INQUIRY (PDU framing kept)" % (what, answer))
    else:
        r.fail("%s: want Reject, a SCSI Response or close; got %s %r" % (what, kind, pdu))
    s.close()


def c_ahs_length_lie(r):
    s = r.session()
    header = bhs(OP_SCSI_CMD, 0x81, ahs_words=255, lun=s.lun, itt=s.next_itt(), fields=struct.pack(">III", 0, s.cmdsn, s.exp_statsn) + bytes(16))
    s.conn.send_raw(header + bytes(40))
    time.sleep(0.2)
    s.close()
    r.ok("sent TotalAHSLength 255 with 40 AHS bytes and closed")


def c_login_chap(r):
    a = r.args
    s = Session(a.portal, a.chap_target, a.lun)
    status = s.login(chap=(a.chap_user, a.chap_secret))
    r.expect(status == 0, "CHAP login with the right secret: status 0x%04x" % status)
    if status == 0:
        status, _, _ = s.inquiry()
        r.expect(status == 0, "CHAP session answers INQUIRY")
        s.logout()
    s.close()
    s = Session(a.portal, a.chap_target, a.lun)
    status = s.login(chap=(a.chap_user, a.chap_secret + "x"))
    r.expect(status == 0x0201, "CHAP login with a wrong secret: status 0x%04x (want 0x0201, authentication failure)" % status)
    s.close()
    s = Session(a.portal, a.chap_target, a.lun)
    status = s.login(chap=("nobody", a.chap_secret))
    r.expect(status == 0x0201, "CHAP login with an unknown user: status 0x%04x (want 0x0201)" % status)
    s.close()
    s = Session(a.portal, a.chap_target, a.lun)
    try:
        status = s.login()
        r.expect(status >> 8 == 0x02 and status != 0, "login offering only AuthMethod=None to a CHAP target: status 0x%04x (want class 0x02)" % status)
    except Closed:
        r.ok("login offering only AuthMethod=None to a CHAP target: connection closed")
    s.close()


def c_login_chap_mutual(r):
    a = r.args
    user, secret = a.mutual_initiator.split(":", 1)
    target_user, target_secret = a.mutual_target_credentials.split(":", 1)
    s = Session(a.portal, a.mutual_target, a.lun)
    status = s.login(chap=(user, secret), mutual=(target_user, target_secret))
    r.expect(status == 0, "mutual CHAP: login with the right secrets, the target's CHAP_N and CHAP_R verified here: status 0x%04x" % status)
    if status == 0:
        status, _, _ = s.inquiry()
        r.expect(status == 0, "mutual CHAP session answers INQUIRY")
        s.logout()
    s.close()
    s = Session(a.portal, a.mutual_target, a.lun)
    try:
        status = s.login(chap=(user, secret), mutual=(target_user, target_secret + "x"))
        r.fail("mutual CHAP with a wrong target secret on our side: the target's CHAP_R matched it (status 0x%04x)" % status)
    except ProtocolViolation as error:
        r.ok("mutual CHAP: a CHAP_R computed with another secret is caught here (%s)" % str(error)[:60])
    s.close()
    s = Session(a.portal, a.mutual_target, a.lun)
    what = "mutual CHAP with our CHAP_I/CHAP_C copied from the target's (reflection)"
    try:
        status = s.login(chap=(user, secret), mutual=(target_user, target_secret), reflect=True)
        r.expect(status >> 8 == 0x02, "%s: login failure status 0x%04x (want class 0x02, or a close)" % (what, status))
    except (Closed, OSError):
        r.ok("%s: connection closed (RFC 7143 §12.1.3)" % what)
    except ProtocolViolation as error:
        r.fail("%s: the target answered the reflected challenge: %s" % (what, error))
    s.close()


def c_login_garbage_text(r):
    s = Session(r.args.portal, r.args.target, r.args.lun)
    garbage = text_bytes([("InitiatorName", INITIATOR), ("TargetName", r.args.target)]) + b"\xff\xfe\x00no equals sign here\x00=\x00" + os.urandom(200).replace(b"\0", b"\x01")
    itt = s.next_itt()
    header, _ = s.login_pdu(True, 1, 3, [], itt)
    header = bytearray(header)
    header[5:8] = len(garbage).to_bytes(3, "big")
    s.conn.send(bytes(header), garbage)
    kind, pdu = s.conn.wait_closed_or_pdu(5.0)
    what = "Login with text that is not key=value"
    if kind == "closed":
        r.ok("%s: connection closed" % what)
    elif kind == "pdu" and pdu.opcode == OP_LOGIN_RSP:
        status = (pdu.bhs[36] << 8) | pdu.bhs[37]
        r.expect(status != 0, "%s: login failure status 0x%04x (want non-zero)" % (what, status))
    elif kind == "pdu" and pdu.opcode == OP_REJECT:
        r.ok("%s: Reject 0x%02x" % (what, pdu.bhs[2]))
    else:
        r.fail("%s: %s %r" % (what, kind, pdu))
    s.close()


def c_login_huge_text(r):
    s = Session(r.args.portal, r.args.target, r.args.lun)
    text = text_bytes([("InitiatorName", INITIATOR), ("TargetName", r.args.target), ("AuthMethod", "None")]) + \
        b"".join(b"X-org.strata.pad%d=%s\0" % (i, b"y" * 200) for i in range(300))
    itt = s.next_itt()
    header, data = s.login_pdu(True, 0, 1, [], itt, raw_text=text)
    try:
        s.conn.send(header, data)
    except OSError:
        pass
    kind, pdu = s.conn.wait_closed_or_pdu(5.0)
    what = "Login PDU with %d bytes of text (> 8192)" % len(text)
    if kind == "closed":
        r.ok("%s: connection closed" % what)
    elif kind == "pdu" and pdu.opcode == OP_LOGIN_RSP:
        status = (pdu.bhs[36] << 8) | pdu.bhs[37]
        r.expect(status != 0, "%s: login failure status 0x%04x (want non-zero)" % (what, status))
        # Our MaxRecvDataSegmentLength is the default 8192 during login (RFC 7143 §13.12).
        r.expect(len(pdu.data) <= 8192, "%s: the Login Response's data segment is %d bytes (at most 8192 during login)" % (what, len(pdu.data)))
    elif kind == "pdu" and pdu.opcode == OP_REJECT:
        r.ok("%s: Reject 0x%02x" % (what, pdu.bhs[2]))
    else:
        r.fail("%s: %s %r" % (what, kind, pdu))
    s.close()


def c_login_unknown_target(r):
    s = Session(r.args.portal, r.args.target + "-does-not-exist", r.args.lun)
    status = s.login()
    r.expect(status == 0x0203, "login to an unknown target name: status 0x%04x (want 0x0203, not found)" % status)
    s.close()


def c_scsi_before_login(r):
    conn = Connection(r.args.portal)
    header = bhs(OP_SCSI_CMD, 0xC1, lun=0, itt=1, fields=struct.pack(">III", 96, 1, 0) + bytes([0x12, 0, 0, 0, 96, 0]).ljust(16, b"\0"))
    conn.send(header)
    kind, pdu = conn.wait_closed_or_pdu(5.0)
    what = "SCSI Command (INQUIRY) before any login"
    if kind == "closed":
        r.ok("%s: connection closed" % what)
    elif kind == "pdu" and pdu.opcode == OP_REJECT:
        r.ok("%s: Reject 0x%02x" % (what, pdu.bhs[2]))
    elif kind == "pdu" and pdu.opcode == OP_LOGIN_RSP and pdu.bhs[36] != 0:
        r.ok("%s: login failure 0x%02x%02x" % (what, pdu.bhs[36], pdu.bhs[37]))
    else:
        r.fail("%s: want close, Reject or login failure; got %s %r" % (what, kind, pdu))
    conn.close()


def daemon_fd_limit(pid):
    """The daemon's soft open-files limit (it holds one descriptor per connection)."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                value = line.split()[3]
                return 1 << 30 if value == "unlimited" else int(value)
    return 1 << 30


def c_idle_connections(r, count=1000):
    if r.args.pid:
        # Stay under the daemon's own descriptor limit (a Debian default soft limit is 1024), so
        # what is measured is the target, not EMFILE.
        count = min(count, daemon_fd_limit(r.args.pid) - 64)
        print("      %d idle connections (daemon open-files limit %d)" % (count, daemon_fd_limit(r.args.pid)))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 200), hard))
    before = r.rss_mib() if r.args.pid else None
    held = []
    opened = 0
    try:
        for i in range(count):
            try:
                host, port = r.args.portal.rsplit(":", 1)
                sock = socket.create_connection((host, int(port)), timeout=5)
            except OSError as error:
                r.fail("idle connection %d could not be opened: %s" % (i, error))
                break
            if i % 2:
                sock.sendall(bhs(OP_LOGIN_REQ, 0x87, dsl=300, itt=i, immediate=True)[:30])  # stopped mid-BHS
            held.append(sock)
            opened += 1
        time.sleep(1.0)
        try:
            s = r.session()
            s.inquiry()
            status, _, data = (s.read_capacity16(), s.read10(0, len(r.pattern) // s.block_size))[1]
            r.expect(status == 0 and data == r.pattern, "with %d idle connections open, a new session reads the pattern" % opened)
            s.logout()
            s.close()
        except Exception as error:
            r.fail("with %d idle connections open, a new session failed: %s" % (opened, describe(error)))
        if before is not None:
            during = r.rss_mib()
            r.expect(during - before < 200, "daemon VmRSS %.0f MiB -> %.0f MiB with %d idle connections (growth < 200 MiB)" % (before, during, opened))
    finally:
        for sock in held:
            sock.close()


def setup(r):
    s = r.session()
    s.read_capacity16()
    r.pattern = bytes((i * 7 + 3) & 0xFF for i in range(64 * 1024))
    status, sense, _ = s.write10(0, r.pattern)
    if status != 0:
        sys.exit("setup: WRITE(10) of the pattern failed: status 0x%02x sense %s" % (status, hx(sense)))
    status, sense, _ = s.scsi(bytes([0x35]) + bytes(9))  # SYNCHRONIZE CACHE(10)
    s.logout()
    s.close()


def malformed(args):
    r = Runner(args)
    random.seed()
    setup(r)
    cases = [
        ("positive", c_positive),
        ("small-mrdsl", c_small_mrdsl),
        ("discovery", c_discovery),
        ("header-digest-ok", c_header_digest_ok),
        ("header-digest-bad", c_header_digest_bad),
        ("data-digest-bad", c_data_digest_bad),
        ("unknown-opcode-0x0f", c_unknown_opcode(0x0F)),
        ("unknown-opcode-0x1a", c_unknown_opcode(0x1A)),
        ("target-opcode-0x21", c_unknown_opcode(0x21)),
        ("truncated-bhs", c_truncated_bhs),
        ("truncated-data", c_truncated_data),
        ("dsl-over-max", c_dsl_over_max),
        ("dsl-huge", c_dsl_huge),
        ("cmdsn-window", c_cmdsn_window),
        ("ahs-large", c_ahs_large),
        ("ahs-length-lie", c_ahs_length_lie),
        ("login-garbage-text", c_login_garbage_text),
        ("login-huge-text", c_login_huge_text),
        ("login-unknown-target", c_login_unknown_target),
        ("scsi-before-login", c_scsi_before_login),
        ("idle-connections", c_idle_connections),
    ]
    if args.chap_target:
        cases.insert(15, ("login-chap", c_login_chap))
    if args.mutual_target:
        cases.insert(16, ("login-chap-mutual", c_login_chap_mutual))
    for name, case in cases:
        r.run(name, lambda case=case: case(r))
    print("%d checks passed, %d failed" % (r.passed, r.failures))
    return 1 if r.failures else 0


def write_protect(args):
    """A snapshot target: MODE SENSE(6) has WP set; WRITE(10) gets DATA PROTECT / WRITE PROTECTED."""
    r = Runner(args)
    s = r.session()
    s.read_capacity16()
    status, sense, data = s.scsi(bytes([0x1A, 0, 0x3F, 0, 255, 0]), read_length=255)
    r.expect(status == 0 and len(data) >= 4 and data[2] & 0x80, "MODE SENSE(6): WP bit set in the device-specific parameter (0x%02x)" % (data[2] if len(data) > 2 else -1))
    status, _, before = s.read10(0, 8)
    for label, cdb in (("WRITE(10)", struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 8, 0)),
                       ("WRITE(16)", struct.pack(">BBQIBB", 0x8A, 0, 0, 8, 0, 0))):
        status, sense, _ = s.scsi(cdb, write_data=bytes([0x5A]) * (8 * s.block_size))
        key, asc, ascq = sense_key(sense)
        r.expect(status == 2 and key == 0x7 and asc == 0x27,
                 "%s to the snapshot: CHECK CONDITION, DATA PROTECT, WRITE PROTECTED (got status 0x%02x, sense key %s, ASC/ASCQ %s/%s)" % (label, status, key, asc, ascq))
    status, _, after = s.read10(0, 8)
    r.expect(status == 0 and after == before, "the snapshot's first 4 KiB are unchanged")
    s.logout()
    s.close()
    print("%d checks passed, %d failed" % (r.passed, r.failures))
    return 1 if r.failures else 0


def sanitize(args):
    """SANITIZE OVERWRITE of the whole LUN, one pass of a block of zeros (as libiscsi's
    test_sanitize_reset.c sends it, but waited for); prints the seconds until GOOD."""
    s = Session(args.portal, args.target, args.lun, timeout=3600)
    status = s.login()
    if status:
        raise ProtocolViolation("login to %s failed with status 0x%04x" % (s.target, status))
    status, sense, _ = s.read_capacity16()
    if status != 0:
        raise ProtocolViolation("READ CAPACITY(16): status 0x%02x, sense %s" % (status, sense.hex()))
    parameters = bytes([0x01, 0]) + struct.pack(">H", s.block_size) + bytes(s.block_size)
    cdb = bytes([0x48, 0x01, 0, 0, 0, 0, 0]) + struct.pack(">H", len(parameters)) + bytes([0])
    started = time.monotonic()
    status, sense, _ = s.scsi(cdb, write_data=parameters, timeout=3600)
    seconds = time.monotonic() - started
    s.logout()
    s.close()
    if status != 0:
        print("SANITIZE OVERWRITE: status 0x%02x, sense %s" % (status, sense.hex()))
        return 1
    print("SANITIZE OVERWRITE of %d bytes: %.2f s" % (s.blocks * s.block_size, seconds))
    return 0


def naa_target_descriptor(session):
    """The identification target descriptor (E4h, SPC-4 §6.4.5.2) of a session's logical unit:
    its first NAA designator from VPD page 83h, and a disk block length of 512."""
    status, sense, page = session.scsi(bytes([0x12, 0x01, 0x83, 0x01, 0x00, 0x00]), read_length=256)
    if status != 0:
        raise ProtocolViolation("INQUIRY VPD 83h failed: status 0x%02x sense %s" % (status, hx(sense)))
    offset = 4
    while offset + 4 <= len(page):
        length = page[offset + 3]
        if page[offset + 1] & 0x0F == 3:
            designator = page[offset:offset + 4 + length]
            return bytes([0xE4, 0, 0, 0]) + designator.ljust(24, b"\0") + bytes([0, 0, 0x02, 0x00])
        offset += 4 + length
    raise ProtocolViolation("VPD page 83h has no NAA designator")


def xcopy(args):
    """EXTENDED COPY (LID1) of --blocks blocks from --target to --dest, sent to --target as copy
    manager, in block-to-block segments of --segment-blocks, up to 128 segments per command.
    Prints the seconds it took; with --expect-sense, the first command must fail with it."""
    source = Session(args.portal, args.target, args.lun)
    dest = Session(args.portal, args.dest, args.lun)
    for s in (source, dest):
        status = s.login()
        if status:
            raise ProtocolViolation("login to %s failed with status 0x%04x" % (s.target, status))
    targets = naa_target_descriptor(source) + naa_target_descriptor(dest)
    dest.logout()
    dest.close()
    started = time.monotonic()
    done = 0
    while done < args.blocks:
        segments = b""
        while done < args.blocks and len(segments) < 128 * 28:
            count = min(args.segment_blocks, args.blocks - done)
            segments += struct.pack(">BBHHHHHQQ", 0x02, 0, 0x18, 0, 1, 0, count,
                                    args.source_lba + done, args.dest_lba + done)
            done += count
        # List ID 0 with LIST ID USAGE 11b (no list identifier, nothing held).
        header = struct.pack(">BBH4xII", 0, 0x18, len(targets), len(segments), 0)
        plist = header + targets + segments
        cdb = bytes([0x83, 0x00]) + bytes(8) + struct.pack(">I", len(plist)) + bytes(2)
        status, sense, _ = source.scsi(cdb, write_data=plist, timeout=600)
        if args.expect_sense:
            got = "%x/%02x/%02x" % sense_key(sense) if status == 2 else "good"
            print("EXTENDED COPY: %s (expected %s)" % (got, args.expect_sense))
            return 0 if got == args.expect_sense else 1
        if status != 0:
            print("EXTENDED COPY failed: status 0x%02x sense %s" % (status, "%x/%02x/%02x" % sense_key(sense)))
            return 1
    print("EXTENDED COPY of %d blocks: %.3f s" % (args.blocks, time.monotonic() - started))
    source.logout()
    source.close()
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["malformed", "write-protect", "xcopy", "sanitize", "selftest"])
    ap.add_argument("--portal")
    ap.add_argument("--target")
    ap.add_argument("--lun", type=int, default=0)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--chap-target")
    ap.add_argument("--chap-user")
    ap.add_argument("--chap-secret")
    ap.add_argument("--mutual-target")
    ap.add_argument("--mutual-initiator", help="USER:SECRET the initiator proves")
    ap.add_argument("--mutual-target-credentials", help="USER:SECRET the target proves")
    ap.add_argument("--filter")
    ap.add_argument("--dest", help="xcopy: the destination target")
    ap.add_argument("--blocks", type=int, default=0)
    ap.add_argument("--source-lba", type=int, default=0)
    ap.add_argument("--dest-lba", type=int, default=0)
    ap.add_argument("--segment-blocks", type=int, default=32768)
    ap.add_argument("--expect-sense", help="xcopy: KEY/ASC/ASCQ in hex, as 7/27/00")
    args = ap.parse_args()
    if args.command == "selftest":
        selftest()
        return 0
    selftest()
    if args.command == "malformed":
        return malformed(args)
    if args.command == "xcopy":
        return xcopy(args)
    if args.command == "sanitize":
        return sanitize(args)
    return write_protect(args)


if __name__ == "__main__":
    sys.exit(main())
