// The pool's table of base images: what `volume create --base FILE` recorded about each file a
// based volume reads through, and the open images themselves.
//
// A record names its base by a small id (VolumeRecord bytes 12..<16); the descriptor behind the
// id lives in `bases.json` beside the pool file, written whole to a temporary file, synced and
// renamed over the old one, so a crash leaves the old table or the new one. The descriptor is
// written before the record that names it is committed: a crash in between leaves an unused
// descriptor, which the next registration or `pool status` ignores, never a record without one.
//
// Safety of the base (issue 10): at creation Strata records each file's path, size and
// modification time, and a content fingerprint (CRC-32C of every byte). Before serving from a
// base, and again at most once per `Limits.baseRecheckSeconds` while serving, the sizes and
// modification times are compared with the record; a difference makes every read through that
// base fail with an error naming the file and the fix, until the volume is rebased or
// flattened. Data from a changed base is never served. `strata check` recomputes fingerprints.
//
// Locking: one mutex guards the table and the open states; it is never held across file I/O
// (opening an image and statting files happen outside it).

import Foundation
import Synchronization

/// One file of a base image's stack as it was when the base was recorded.
public struct BaseFileIdentity: Codable, Sendable, Equatable {
    public var path: String
    public var size: UInt64
    public var modifiedNanos: Int64

    public init(path: String, size: UInt64, modifiedNanos: Int64) {
        self.path = path
        self.size = size
        self.modifiedNanos = modifiedNanos
    }

    /// The file's identity now.
    /// - Throws: `.notFound` or `.io` naming the file.
    public static func current(path: String) throws(StrataError) -> BaseFileIdentity {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT {
                throw StrataError(.notFound, "base image \(path): no such file")
            }
            throw StrataError.io("stat base image", path, errno: code)
        }
        var size = UInt64(info.st_size)
        if (info.st_mode & S_IFMT) == S_IFBLK {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                size = UInt64(max(0, lseek(fd, 0, SEEK_END)))
                close(fd)
            }
        }
        let nanos = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        return BaseFileIdentity(path: path, size: size, modifiedNanos: nanos)
    }

    /// CRC-32C of every byte of the file, as 8 hex digits.
    /// - Throws: `.notFound` or `.io` naming the file.
    public static func fingerprint(path: String) throws(StrataError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw StrataError(.notFound, "base image \(path): no such file") }
            throw StrataError.io("open base image", path, errno: code)
        }
        defer { close(fd) }
        var crc: UInt32 = 0
        var buffer = [UInt8](repeating: 0, count: Limits.baseFingerprintReadBytes)
        var offset: off_t = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw StrataError.io("read base image", path, errno: errno) }
            if count == 0 { break }
            crc = buffer.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<count]), seed: crc) }
            offset += off_t(count)
        }
        return String(format: "%08x", crc)
    }
}

/// A snapshot in an object-store remote that a volume reads through (`volume create --from`).
/// The manifest's checksum is the change detection: reopening refuses a manifest whose bytes
/// differ, and each object's SHA-256 (in the manifest) is its integrity.
public struct RemoteBaseReference: Codable, Sendable, Equatable {
    /// The remote's name in the pool's remotes.json.
    public var remote: String
    public var volume: String
    public var snapshot: String
    /// The manifest's key in the remote.
    public var manifestKey: String
    /// SHA-256 (hex) of the manifest's bytes as read when the volume was created.
    public var manifestSHA256: String

    public init(remote: String, volume: String, snapshot: String, manifestKey: String, manifestSHA256: String) {
        self.remote = remote
        self.volume = volume
        self.snapshot = snapshot
        self.manifestKey = manifestKey
        self.manifestSHA256 = manifestSHA256
    }

    /// `REMOTE:VOL@SNAP`, how listings and errors name the base.
    public var label: String { "\(self.remote):\(self.volume)@\(self.snapshot)" }
}

/// What an opener is asked to open: an image file, or a snapshot in a remote.
public enum BaseSource: Sendable, Equatable {
    case file(String)
    case remote(RemoteBaseReference)

    /// The file's path, or `REMOTE:VOL@SNAP`.
    public var path: String {
        switch self {
        case .file(let path): return path
        case .remote(let reference): return reference.label
        }
    }
}

/// What the pool recorded about one base image.
public struct BaseDescriptor: Codable, Sendable, Equatable {
    public var id: UInt32
    /// The top file's absolute path.
    public var path: String
    public var format: String
    public var virtualSize: UInt64
    /// The image's files from the top down, as they were at creation.
    public var files: [BaseFileIdentity]
    /// The image's layers (path, format, virtual size) from the top down.
    public var layers: [BaseLayer]
    /// Each file's content fingerprint, in the order of `files`.
    public var fingerprints: [String]
    public var createdAtNanos: Int64
    /// Set for a remote snapshot (then `files` and `fingerprints` are empty); absent in tables
    /// written before remote bases existed, which decode as file bases.
    public var remote: RemoteBaseReference?

    public init(
        id: UInt32, path: String, format: String, virtualSize: UInt64, files: [BaseFileIdentity],
        layers: [BaseLayer], fingerprints: [String], createdAtNanos: Int64, remote: RemoteBaseReference? = nil
    ) {
        self.id = id
        self.path = path
        self.format = format
        self.virtualSize = virtualSize
        self.files = files
        self.layers = layers
        self.fingerprints = fingerprints
        self.createdAtNanos = createdAtNanos
        self.remote = remote
    }

    /// Records a remote snapshot opened as `image`.
    public static func recording(_ image: any BaseImage, remote: RemoteBaseReference) -> BaseDescriptor {
        BaseDescriptor(
            id: 0, path: remote.label, format: "remote", virtualSize: image.virtualSize, files: [], layers: image.layers,
            fingerprints: [], createdAtNanos: Int64(Date().timeIntervalSince1970 * 1e9), remote: remote)
    }

    /// What an opener is given to open this base.
    public var source: BaseSource {
        self.remote.map { .remote($0) } ?? .file(self.path)
    }

    /// Records `image` (opened from `path`): identities and fingerprints of every file it reads.
    /// - Throws: `.notFound` or `.io` naming the file.
    public static func recording(_ image: any BaseImage, path: String) throws(StrataError) -> BaseDescriptor {
        var files: [BaseFileIdentity] = []
        var fingerprints: [String] = []
        for layer in image.layers {
            files.append(try BaseFileIdentity.current(path: layer.path))
            fingerprints.append(try BaseFileIdentity.fingerprint(path: layer.path))
        }
        return BaseDescriptor(
            id: 0, path: image.layers.first?.path ?? path, format: image.layers.first?.format ?? "raw",
            virtualSize: image.virtualSize, files: files, layers: image.layers, fingerprints: fingerprints,
            createdAtNanos: Int64(Date().timeIntervalSince1970 * 1e9))
    }

    /// The first difference between the files as recorded and as they are now, as a sentence;
    /// nil when every file has its recorded size and modification time. Only file bases have
    /// files to stat; a remote base's manifest checksum is checked by its opener instead.
    func change() -> String? {
        guard self.remote == nil else { return nil }
        for recorded in self.files {
            let now: BaseFileIdentity
            do throws(StrataError) {
                now = try BaseFileIdentity.current(path: recorded.path)
            } catch {
                return error.code == .notFound ? "\(recorded.path) is missing" : error.message
            }
            if now.size != recorded.size {
                return "\(recorded.path) changed size (recorded=\(recorded.size) now=\(now.size))"
            }
            if now.modifiedNanos != recorded.modifiedNanos {
                return "\(recorded.path) was modified after the volume was created (recorded mtime=\(recorded.modifiedNanos) now=\(now.modifiedNanos))"
            }
        }
        return nil
    }
}

/// Opens a base image: a file (StrataImage's `BaseImages.open`) or a remote snapshot
/// (StrataObjectStore's `RemoteBase`), injected by the layer above.
public typealias BaseOpener = @Sendable (BaseSource) throws(StrataError) -> any BaseImage

/// The base images of one pool: their descriptors (persisted) and their open images.
public final class BaseTable: @unchecked Sendable {
    /// File name of the table inside a pool directory.
    public static let fileName = "bases.json"

    fileprivate enum State {
        case open(any BaseImage, checkedAtNanos: UInt64)
        case unavailable(String, checkedAtNanos: UInt64)
    }

    fileprivate struct Guarded {
        var descriptors: [UInt32: BaseDescriptor] = [:]
        var states: [UInt32: State] = [:]
        var opener: BaseOpener?
        var loadProblem: String?
    }

    private let directory: String?
    fileprivate let guarded = Mutex(Guarded())

    /// Loads the table of the pool in `directory` (none: an empty table kept in memory).
    init(directory: String?) {
        self.directory = directory
        guard let directory else { return }
        let path = directory + "/" + Self.fileName
        guard FileManager.default.fileExists(atPath: path) else { return }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let list = try JSONDecoder().decode([BaseDescriptor].self, from: data)
            self.guarded.withLock { guarded in
                for descriptor in list { guarded.descriptors[descriptor.id] = descriptor }
            }
        } catch {
            // An unreadable table must not stop the pool from serving its other volumes: every
            // based volume reports it instead.
            self.guarded.withLock {
                $0.loadProblem = "the pool's base table \(path) cannot be read (\(error)); restore it from a backup"
            }
        }
    }

    /// Sets how base files are opened. Until it is set, reads through a base fail clearly.
    public func setOpener(_ opener: @escaping BaseOpener) {
        self.guarded.withLock { $0.opener = opener }
    }

    /// The descriptor of base `id`.
    public func descriptor(_ id: UInt32) -> BaseDescriptor? {
        self.guarded.withLock { $0.descriptors[id] }
    }

    /// Every descriptor, by id.
    public var all: [BaseDescriptor] {
        self.guarded.withLock { Array($0.descriptors.values).sorted { $0.id < $1.id } }
    }

    /// Adds `descriptor` (or finds an identical one) and persists the table; returns its id.
    /// - Throws: `.io` when the table cannot be written.
    func register(_ descriptor: BaseDescriptor, image: any BaseImage) throws(StrataError) -> UInt32 {
        let (id, snapshot) = self.guarded.withLock { guarded -> (UInt32, [BaseDescriptor]?) in
            for existing in guarded.descriptors.values
            where existing.files == descriptor.files && existing.fingerprints == descriptor.fingerprints
                && existing.remote == descriptor.remote
            {
                // The image just opened is the same base: keep it unless one is open already,
                // so the first read does not open it again (for a remote base: a login, the
                // manifest's GET and new connections before the read's own request).
                if case .open = guarded.states[existing.id] {} else {
                    guarded.states[existing.id] = .open(image, checkedAtNanos: DispatchTime.now().uptimeNanoseconds)
                }
                return (existing.id, nil)
            }
            let id = (guarded.descriptors.keys.max() ?? 0) + 1
            var stored = descriptor
            stored.id = id
            guarded.descriptors[id] = stored
            guarded.states[id] = .open(image, checkedAtNanos: DispatchTime.now().uptimeNanoseconds)
            return (id, Array(guarded.descriptors.values))
        }
        if let snapshot { try self.persist(snapshot) }
        return id
    }

    /// Drops descriptors no record references (after deletes and flattens) and persists.
    func collect(referenced: Set<UInt32>) throws(StrataError) {
        let snapshot = self.guarded.withLock { guarded -> [BaseDescriptor]? in
            let unused = guarded.descriptors.keys.filter { !referenced.contains($0) }
            guard !unused.isEmpty else { return nil }
            for id in unused {
                guarded.descriptors[id] = nil
                guarded.states[id] = nil
            }
            return Array(guarded.descriptors.values)
        }
        if let snapshot { try self.persist(snapshot) }
    }

    /// The open image of base `id`, checking at most once per `Limits.baseRecheckSeconds` that
    /// its files are still the ones recorded.
    /// - Throws: `.failed` naming the file, what changed and the fix; `.notFound` for an unknown id.
    public func image(_ id: UInt32, for volume: String) throws(StrataError) -> any BaseImage {
        let now = DispatchTime.now().uptimeNanoseconds
        let interval = UInt64(Limits.baseRecheckSeconds * 1e9)
        let (descriptor, state, opener, loadProblem) = self.guarded.withLock {
            ($0.descriptors[id], $0.states[id], $0.opener, $0.loadProblem)
        }
        guard let descriptor else {
            throw StrataError(
                .notFound,
                "volume \(volume): its base image (id \(id)) is not in the pool's base table; \(loadProblem ?? "the table was lost")")
        }
        switch state {
        case .open(let image, let checked) where now &- checked < interval:
            return image
        case .unavailable(let reason, let checked) where now &- checked < interval:
            throw Self.unavailable(descriptor, volume: volume, reason: reason)
        default:
            break
        }
        let outcome = Result { () throws(StrataError) -> any BaseImage in
            if let change = descriptor.change() { throw StrataError(.failed, change) }
            if case .open(let image, _) = state { return image }
            guard let opener else { throw StrataError(.failed, "this strata cannot open base images here") }
            return try opener(descriptor.source)
        }
        switch outcome {
        case .success(let image):
            self.guarded.withLock { $0.states[id] = .open(image, checkedAtNanos: now) }
            return image
        case .failure(let error):
            self.guarded.withLock { $0.states[id] = .unavailable(error.message, checkedAtNanos: now) }
            throw Self.unavailable(descriptor, volume: volume, reason: error.message)
        }
    }

    /// The open image of base `id` as `image(_:for:)` gives it; with `.never`, only when that
    /// needs no wait (the image is open and checked recently, the table not locked), else nil.
    public func image(_ id: UInt32, for volume: String, waiting: Waiting) throws(StrataError) -> (any BaseImage)? {
        guard waiting == .never else { return try self.image(id, for: volume) }
        let now = DispatchTime.now().uptimeNanoseconds
        let state = self.guarded.withLockIfAvailable { $0.states[id] } ?? nil
        guard case .open(let image, let checked) = state, now &- checked < UInt64(Limits.baseRecheckSeconds * 1e9) else {
            return nil
        }
        return image
    }

    /// Why base `id` cannot be read now, or nil when it can.
    public func problem(_ id: UInt32, for volume: String) -> String? {
        do throws(StrataError) {
            _ = try self.image(id, for: volume)
            return nil
        } catch {
            return error.message
        }
    }

    /// Recomputes the fingerprint of every file of base `id`; the problems found.
    public func verify(_ id: UInt32) -> [String] {
        guard let descriptor = self.descriptor(id) else { return ["base image id \(id) is not in the base table"] }
        if let change = descriptor.change() { return ["base image \(descriptor.path): \(change)"] }
        var problems: [String] = []
        for (file, recorded) in zip(descriptor.files, descriptor.fingerprints) {
            do throws(StrataError) {
                let now = try BaseFileIdentity.fingerprint(path: file.path)
                if now != recorded {
                    problems.append(
                        "base image \(file.path): content fingerprint changed (recorded=\(recorded) now=\(now)) although its size and mtime did not"
                    )
                }
            } catch {
                problems.append(error.message)
            }
        }
        return problems
    }

    /// Verifies every base in the table (`strata check`): one problem per damaged file.
    public func verifyAll() -> [CheckReport.Problem] {
        self.all.flatMap { descriptor in
            self.verify(descriptor.id).map { CheckReport.Problem(page: nil, volume: nil, range: nil, message: $0) }
        }
    }

    static func unavailable(_ descriptor: BaseDescriptor, volume: String, reason: String) -> StrataError {
        if let remote = descriptor.remote {
            return StrataError(
                .failed,
                "volume \(volume): remote base \(remote.label) is unavailable: \(reason); check that remote \(remote.remote) is reachable (`strata remote check \(remote.remote)`) and still holds \(remote.volume)@\(remote.snapshot)"
            )
        }
        return StrataError(
            .failed,
            "volume \(volume): base image \(descriptor.path) is unavailable: \(reason); restore the original file, or point the volume at an identical copy with `strata volume rebase \(volume) --base FILE` (or `strata volume flatten` against the original)"
        )
    }

    private func persist(_ descriptors: [BaseDescriptor]) throws(StrataError) {
        guard let directory = self.directory else { return }
        try AtomicFile.writeJSON(
            descriptors.sorted { $0.id < $1.id }, to: directory + "/" + Self.fileName, operation: "write base table")
    }
}

/// Whole-file replacement that a crash leaves old or new: write a temporary file, sync it,
/// rename it over the target, sync the directory.
public enum AtomicFile {
    /// Replaces the file at `path` with `value` as JSON (pretty-printed, sorted keys: the
    /// daemon's state files are read by people too), durably, as `write` does.
    /// - Throws: `.io` naming `operation` and `path` when `value` does not encode, or what
    ///   `write` throws.
    public static func writeJSON<Value: Encodable>(_ value: Value, to path: String, operation: String) throws(StrataError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do {
            data = try encoder.encode(value)
        } catch {
            throw StrataError(.io, "\(operation) \(path): cannot encode (\(error))")
        }
        try Self.write(data, to: path, operation: operation)
    }

    /// Replaces the file at `path` with `data` (mode 0600), durably.
    /// - Throws: `StrataError` with the errno of the step that failed.
    public static func write(_ data: Data, to path: String, operation: String) throws(StrataError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StrataError.io(operation, temporary, errno: errno) }
        let written = data.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let count = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return false }
                offset += count
            }
            return true
        }
        let code = errno
        guard written, fsync(fd) == 0 else {
            close(fd)
            unlink(temporary)
            throw StrataError.io(operation, temporary, errno: written ? errno : code)
        }
        close(fd)
        guard rename(temporary, path) == 0 else { throw StrataError.io(operation, path, errno: errno) }
        let directory = (path as NSString).deletingLastPathComponent
        let dfd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            defer { close(dfd) }
            guard fsync(dfd) == 0 else { throw StrataError.io(operation, directory, errno: errno) }
        }
    }
}

extension BaseTable {
    /// Opens the image file at `path` with the injected opener.
    /// - Throws: the opener's errors naming the file, or `.failed` when no opener is set.
    func openFile(_ path: String, operation: String) throws(StrataError) -> any BaseImage {
        guard let opener = self.guarded.withLock({ $0.opener }) else {
            throw StrataError(.failed, "\(operation): this strata cannot open base images here")
        }
        return try opener(.file(path))
    }
}
