// Times as the stores write them: Swift listings `2025-01-31T12:00:00.123456` (UTC, no zone),
// S3 listings `2025-01-31T12:00:00.000Z`, and HTTP `Last-Modified: Fri, 31 Jan 2025 12:00:00 GMT`.
// GC and leases compare them with the local clock, so only whole seconds matter.

import Foundation
import NIOHTTP1

enum StoreDates {
    /// The UTC time in the first 19 characters, `YYYY-MM-DDTHH:MM:SS`; nil when they are not that.
    static func iso8601(_ text: String) -> Date? {
        let digits = Array(text.utf8.prefix(19))
        guard digits.count == 19 else { return nil }
        func number(_ range: Range<Int>) -> Int32? { Int32(String(decoding: digits[range], as: UTF8.self)) }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19)
        else { return nil }
        var parts = tm()
        parts.tm_year = year - 1900
        parts.tm_mon = month - 1
        parts.tm_mday = day
        parts.tm_hour = hour
        parts.tm_min = minute
        parts.tm_sec = second
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }

    /// An RFC 7231 IMF-fixdate (`Fri, 31 Jan 2025 12:00:00 GMT`); nil when it is not one.
    static func http(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text)
    }
}

extension ObjectInfo {
    /// The object `key` as a HEAD answer's Content-Length and Last-Modified describe it.
    init(key: String, headers: HTTPHeaders) {
        self.init(
            key: key, sizeBytes: headers.first(name: "content-length").flatMap { UInt64($0) } ?? 0,
            lastModified: headers.first(name: "last-modified").flatMap(StoreDates.http))
    }
}
