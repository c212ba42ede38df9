// The receive side both front ends share: appending each read to what is still unparsed.

import NIOCore

extension ByteBuffer {
    /// Appends `read` to these unparsed bytes; when there are none, takes `read` as it is,
    /// without copying it.
    public mutating func cumulate(_ read: ByteBuffer) {
        if self.readableBytes == 0 {
            self = read
        } else {
            var read = read
            self.writeBuffer(&read)
        }
    }
}
