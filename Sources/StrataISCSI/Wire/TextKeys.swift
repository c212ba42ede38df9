// Text keys (RFC 7143 §6): `key=value` pairs, each ended by a NUL byte, in the data segment of
// Login and Text PDUs. Order is kept: a response answers keys in the order they were offered.

/// An ordered list of key=value pairs.
public struct TextKeys: Sendable, Equatable {
    public var pairs: [(key: String, value: String)] = []

    public init() {}

    public init(_ pairs: [(String, String)]) {
        self.pairs = pairs.map { (key: $0.0, value: $0.1) }
    }

    public static func == (a: TextKeys, b: TextKeys) -> Bool {
        a.pairs.map { "\($0.key)=\($0.value)" } == b.pairs.map { "\($0.key)=\($0.value)" }
    }

    /// Parses a data segment. Returns nil when a pair has no `=`, a key is empty or the text is
    /// not UTF-8 (RFC 7143 §6.1).
    public static func parse(_ data: [UInt8]) -> TextKeys? {
        var keys = TextKeys()
        for field in data.split(separator: 0, omittingEmptySubsequences: true) {
            guard let text = String(validating: field, as: UTF8.self), let equals = text.firstIndex(of: "="),
                equals != text.startIndex
            else { return nil }
            keys.pairs.append((key: String(text[..<equals]), value: String(text[text.index(after: equals)...])))
        }
        return keys
    }

    public subscript(key: String) -> String? {
        self.pairs.last { $0.key == key }?.value
    }

    public mutating func append(_ key: String, _ value: String) {
        self.pairs.append((key: key, value: value))
    }

    public var isEmpty: Bool { self.pairs.isEmpty }

    /// The data segment: each pair as `key=value` and a NUL.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        for pair in self.pairs {
            out.append(contentsOf: Array("\(pair.key)=\(pair.value)".utf8))
            out.append(0)
        }
        return out
    }
}
