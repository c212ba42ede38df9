// Just enough XML for S3's answers: ListObjectsV2 (`<Contents>` with `<Key>`, `<Size>`,
// `<LastModified>`; `<IsTruncated>`, `<NextContinuationToken>`) and error documents (`<Code>`).
// These documents are flat, carry no attributes we need and no CDATA, so a scanner for
// `<Name>text</Name>` with the five predefined entities is exact for them; a document it cannot
// read is an error, never a guess.

import Foundation

enum XMLScanner {
    /// The text of every `<name>…</name>` element, in order, entities decoded.
    static func values(of name: String, in text: String) -> [String] {
        var result: [String] = []
        var rest = text[...]
        let open = "<\(name)>"
        let close = "</\(name)>"
        while let start = rest.range(of: open) {
            guard let end = rest.range(of: close, range: start.upperBound..<rest.endIndex) else { break }
            result.append(Self.decode(rest[start.upperBound..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return result
    }

    /// The first `<name>` element's text, or nil.
    static func firstValue(of name: String, in text: String) -> String? {
        Self.values(of: name, in: text).first
    }

    private static func decode(_ text: Substring) -> String {
        guard text.contains("&") else { return String(text) }
        return text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
