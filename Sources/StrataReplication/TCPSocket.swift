// Blocking TCP sockets for replication: listen, accept, connect with a timeout, and reading a
// line without reading past it (a stream's bytes follow the request line on the same socket).
// Replication runs on its own threads, one per job or connection, so blocking I/O is the
// simple, bounded choice; every connection has send and receive timeouts so a dead peer is
// noticed and retried rather than waited on forever.

import Foundation
import StrataCore

#if canImport(Glibc)
import Glibc
#endif

enum TCPSocket {

    /// Listens on `host:port`; returns the listening descriptor.
    static func listen(host: String, port: Int) throws(StrataError) -> Int32 {
        let (address, length, family) = try Self.resolve(host: host, port: port, operation: "listen")
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StrataError(.io, "replication: cannot create a socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw StrataError(.io, "replication: cannot listen on \(host):\(port) (\(reason)); is another server using it?")
        }
        return fd
    }

    /// Connects to `host:port`, with I/O timeouts set.
    static func connect(host: String, port: Int) throws(StrataError) -> Int32 {
        let (address, length, family) = try Self.resolve(host: host, port: port, operation: "connect to")
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StrataError(.io, "replication: cannot create a socket") }
        Self.setTimeouts(fd)
        let connected = withUnsafePointer(to: address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw StrataError(.io, "replicate: cannot connect to \(host):\(port) (\(reason))")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    static func setTimeouts(_ fd: Int32) {
        var timeout = timeval(tv_sec: Limits.replicationIOTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    private static func resolve(host: String, port: Int, operation: String) throws(StrataError)
        -> (sockaddr_storage, socklen_t, Int32)
    {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else {
            throw StrataError(.invalidArgument, "replication: cannot \(operation) \(host):\(port): unknown host")
        }
        defer { freeaddrinfo(list) }
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen)))
        }
        return (storage, first.pointee.ai_addrlen, first.pointee.ai_family)
    }

    /// Writes all of `bytes`.
    static func write(_ fd: Int32, _ bytes: [UInt8], what: String) throws(StrataError) {
        try FileDescriptorStream(fd: fd, name: what).write(bytes)
    }

    /// Reads exactly `count` bytes; throws when the peer closes first.
    static func read(_ fd: Int32, count: Int, what: String) throws(StrataError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, count - done, 0) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                throw StrataError(.io, "replication: the peer closed the connection while sending \(what)")
            }
            done += got
        }
        return bytes
    }

    /// Reads one line (without the newline), byte by byte so nothing after it is consumed.
    static func readLine(_ fd: Int32, limit: Int = 1 << 20, what: String) throws(StrataError) -> [UInt8] {
        var line: [UInt8] = []
        while true {
            let byte = try Self.read(fd, count: 1, what: what)[0]
            if byte == UInt8(ascii: "\n") { return line }
            line.append(byte)
            guard line.count <= limit else { throw StrataError(.invalidArgument, "replication: \(what) is too long") }
        }
    }

    /// The local port of a bound socket.
    static func localPort(_ fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard ok == 0 else { return 0 }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }

    /// The peer's address as text, for logs.
    static func peerName(_ fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        guard ok == 0 else { return "?" }
        var host = [CChar](repeating: 0, count: 256)
        var service = [CChar](repeating: 0, count: 32)
        let named = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, 256, &service, 32, NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard named == 0 else { return "?" }
        return "\(String(cString: host)):\(String(cString: service))"
    }
}
