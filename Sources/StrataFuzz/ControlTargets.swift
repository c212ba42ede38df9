// The daemon's control protocol (ControlProtocol.swift): JSON lines on the control socket. The
// server takes one request line of at most `ControlServer.requestBytesMax` bytes; the CLI reads
// reply lines (progress, result or error). Both are decoded here from every line of the input,
// as each side would. JSON carries no checksum.

import StrataCore
import StrataReplication
import StrataServer

enum ControlTargets {
    static let control = FuzzTarget(
        name: "control",
        summary: "control socket lines: ControlRequest (daemon side) and ControlMessage replies (CLI side)"
    ) { input in
        var pending = input
        let failure = StrataError(.invalidArgument, "control: malformed request")
        while let line = JSONLines.takeLine(from: &pending) {
            if let request = try? JSONLines.decode(ControlRequest.self, from: line, error: failure) {
                _ = request.needsDescriptor
                // What decodes must encode again: the CLI and the daemon share the type.
                FuzzCheck.require((try? JSONLines.encode(request, what: "request")) != nil, "a decoded request does not encode")
            }
            _ = try? JSONLines.decode(ControlMessage.self, from: line, error: failure)
        }
    }
}
