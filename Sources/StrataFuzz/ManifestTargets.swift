// Object-store manifests (Sources/StrataObjectStore/Manifest.swift): a JSON header line, then a
// JSON body whose length and SHA-256 the header carries. The fix-up rewrites the header's
// `bodyBytes` and `bodySHA256` for the body that follows (keeping its other fields), so a
// mutated body is judged on its content, not refused at the digest.

import Crypto
import Foundation
import StrataCore
import StrataObjectStore

enum ManifestTargets {
    static let manifest = FuzzTarget(
        name: "manifest",
        summary: "object-store snapshot manifests (Manifest.decode) with the body digest fixed up"
    ) { input in
        let data = Self.fixDigest(Data(input))
        do throws(StrataError) {
            let manifest = try Manifest.decode(data, key: "manifests/fuzz")
            // A manifest that decodes is one this strata could have written.
            let again = try Manifest.decode(manifest.encode(), key: "manifests/fuzz")
            FuzzCheck.require(again == manifest, "manifest does not round-trip")
        } catch {
            return
        }
    }

    static func fixDigest(_ data: Data) -> Data {
        guard let newline = data.firstIndex(of: UInt8(ascii: "\n")),
            var header = (try? JSONSerialization.jsonObject(with: data[data.startIndex..<newline])) as? [String: Any]
        else { return data }
        let body = data[(newline + 1)...]
        header["bodyBytes"] = body.count
        header["bodySHA256"] = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        guard let fixed = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]) else { return data }
        return fixed + Data([UInt8(ascii: "\n")]) + body
    }
}
