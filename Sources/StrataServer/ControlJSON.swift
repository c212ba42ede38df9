// The one JSON encoding of the control plane's objects for people and scripts: what the CLI's
// `--json` prints and what the HTTP API serves (sorted keys, pretty-printed). One encoder, so
// `curl /api/v1/volumes` and `strata volume list --json` give the same bytes.

import Foundation

/// Encodes the CLI's `--json` objects.
public enum ControlJSON {
    /// The JSON of `value`, with a final newline.
    /// - Throws: `EncodingError` when a value cannot be encoded (a non-finite Double).
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        var data = try encoder.encode(value)
        data.append(UInt8(ascii: "\n"))
        return data
    }
}
