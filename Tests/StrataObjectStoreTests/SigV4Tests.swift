// SigV4 against AWS's published vectors: the general "Signature Version 4 test suite"
// (get-vanilla, get-vanilla-query-order-key-case; credentials AKIDEXAMPLE, service "service")
// and the S3 API reference's worked examples ("Example: GET Object" with a Range header, and
// "Example: PUT Object" whose key holds a `$` the canonical URI must encode). Each expected
// signature is AWS's, copied from those documents.

import Foundation
import StrataObjectStore
import Testing

@Suite struct SigV4Tests {
    let suite = SigV4Signer(
        accessKeyID: "AKIDEXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region: "us-east-1",
        service: "service")
    let s3 = SigV4Signer(
        accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
    let suiteHeaders = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]

    @Test func getVanilla() {
        let canonical = SigV4Signer.canonicalRequest(
            method: "GET", path: "/", query: [], headers: self.suiteHeaders, payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(
            canonical
                == "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        let authorization = self.suite.authorization(
            method: "GET", path: "/", query: [], headers: self.suiteHeaders, payloadHash: SigV4Signer.emptyPayloadHash,
            amzDate: "20150830T123600Z")
        #expect(
            authorization
                == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        )
    }

    @Test func getVanillaQueryOrderKeyCase() {
        let authorization = self.suite.authorization(
            method: "GET", path: "/", query: [("Param2", "value2"), ("Param1", "value1")], headers: self.suiteHeaders,
            payloadHash: SigV4Signer.emptyPayloadHash, amzDate: "20150830T123600Z")
        #expect(authorization.hasSuffix("Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"))
    }

    @Test func s3GetObjectWithRange() {
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash), ("x-amz-date", "20130524T000000Z"),
        ]
        let authorization = self.s3.authorization(
            method: "GET", path: "/test.txt", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash,
            amzDate: "20130524T000000Z")
        #expect(
            authorization
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        )
    }

    @Test func s3PutObjectEncodesTheKey() {
        let payload = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        let headers = [
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", payload), ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ]
        let canonical = SigV4Signer.canonicalRequest(
            method: "PUT", path: "/test$file.text", query: [], headers: headers, payloadHash: payload)
        #expect(canonical.hasPrefix("PUT\n/test%24file.text\n\n"))
        let authorization = self.s3.authorization(
            method: "PUT", path: "/test$file.text", query: [], headers: headers, payloadHash: payload,
            amzDate: "20130524T000000Z")
        #expect(authorization.hasSuffix("Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"))
    }

    @Test func encodingKeepsUnreservedAndTheColonOfTempAuthKeys() {
        #expect(SigV4Signer.encode("a-b_c.d~e/f g:h", slash: false) == "a-b_c.d~e/f%20g%3Ah")
        #expect(SigV4Signer.encode("a/b", slash: true) == "a%2Fb")
        #expect(SigV4Signer.encode("é", slash: true) == "%C3%A9")
    }

    @Test func amzDateIsUTC() {
        #expect(SigV4Signer.amzDate(Date(timeIntervalSince1970: 1_369_353_600)) == "20130524T000000Z")
    }
}
