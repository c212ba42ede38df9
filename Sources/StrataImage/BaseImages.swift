// Opening a base image file: the format is probed from its first bytes (qcow2's magic, else
// raw), and a qcow2 image's backing chain is opened below it.

import StrataCore

/// Opens external base images for StrataCore's `BaseImage` seam.
public enum BaseImages {
    /// Opens `path` read-only as a raw or qcow2 image, with its whole backing chain.
    /// - Throws: `.notFound`, `.io`, `.corrupt` or `.invalidArgument` naming the file and the problem.
    public static func open(path: String) throws(StrataError) -> any BaseImage {
        throw StrataError(.invalidArgument, "open base image \(path): base images are being built (issue 10)")
    }
}
