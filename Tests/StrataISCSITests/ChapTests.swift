import Testing

@testable import StrataISCSI

@Suite("CHAP and MD5")
struct ChapTests {
    /// RFC 1321 appendix A.5 test suite.
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
            #expect(Chap.encode(MD5.digest(Array(message.utf8))) == "0x" + expected, "MD5(\"\(message)\")")
        }
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
