import Crypto
import Testing

@testable import StrataISCSI

@Suite("CHAP and MD5")
struct ChapTests {
    /// RFC 1321 appendix A.5 test suite, through swift-crypto's MD5 as CHAP uses it.
    @Test func md5MatchesRFC1321() {
        let vectors: [(String, String)] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a"
            ),
        ]
        for (message, expected) in vectors {
            #expect(
                Chap.encode(Array(Insecure.MD5.hash(data: Array(message.utf8)))) == "0x" + expected,
                "MD5(\"\(message)\")")
        }
    }

    /// RFC 1994 §4.1: the response is MD5(identifier || secret || challenge). The expected value
    /// is Python's `hashlib.md5(bytes([0x2a]) + b"secret-for-all" + bytes(range(16)))`.
    @Test func chapResponseIsMD5OfIdentifierSecretAndChallenge() {
        let challenge = Array(UInt8(0)..<16)
        let response = Chap.response(identifier: 0x2a, secret: "secret-for-all", challenge: challenge)
        #expect(Chap.encode(response) == "0x44c533fa0fd768e8928ed5f372769727")
        #expect(Chap.verify(response, identifier: 0x2a, secret: "secret-for-all", challenge: challenge))
    }

    /// The check refuses every near miss: a flipped last byte, a short or long answer, another
    /// identifier, another secret.
    @Test func chapVerifyRefusesNearMisses() {
        let challenge = Array(UInt8(0)..<16)
        let right = Chap.response(identifier: 7, secret: "secret-for-all", challenge: challenge)
        var flipped = right
        flipped[15] ^= 0x01
        #expect(!Chap.verify(flipped, identifier: 7, secret: "secret-for-all", challenge: challenge))
        #expect(!Chap.verify(Array(right.dropLast()), identifier: 7, secret: "secret-for-all", challenge: challenge))
        #expect(!Chap.verify(right + [0], identifier: 7, secret: "secret-for-all", challenge: challenge))
        #expect(!Chap.verify([], identifier: 7, secret: "secret-for-all", challenge: challenge))
        #expect(!Chap.verify(right, identifier: 8, secret: "secret-for-all", challenge: challenge))
        #expect(!Chap.verify(right, identifier: 7, secret: "secret-for-al1", challenge: challenge))
    }

    @Test func chapValueEncodings() {
        #expect(Chap.decode("0x0aFF") == [0x0a, 0xff])
        #expect(Chap.decode("0xabc") == [0x0a, 0xbc])
        #expect(Chap.decode("0bAQID") == [1, 2, 3])
        #expect(Chap.decode("0x") == nil)
        #expect(Chap.decode("0xzz") == nil)
        #expect(Chap.decode("1234") == nil)
    }

    @Test func credentialLookupPrefersTheMostSpecific() {
        var settings = ChapSettings()
        settings.all = ChapCredential(user: "all", secret: "secret-for-all")
        settings.targets["vm1"] = ChapCredential(user: "vm1", secret: "secret-for-vm1")
        settings.targets["vm1@s1"] = ChapCredential(user: "s1", secret: "secret-for-s1")
        #expect(settings.credential(for: "vm1")?.user == "vm1")
        #expect(settings.credential(for: "vm1@s1")?.user == "s1")
        #expect(settings.credential(for: "vm1@s2")?.user == "vm1")
        #expect(settings.credential(for: "vm2")?.user == "all")
        #expect(settings.credential(for: nil)?.user == "all")
    }
}
