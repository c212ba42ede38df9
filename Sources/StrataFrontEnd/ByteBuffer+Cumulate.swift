// The receive side both front ends share: appending each read to what is still unparsed.
//
// A front end that hands parsed payloads out as slices of this buffer (NBD's WRITE data goes to
// the engine without a copy) leaves the buffer's storage shared until those requests finish. A
// read appended to shared storage would copy all of it first (ByteBuffer is copy-on-write),
// consumed bytes included: for 1 MiB writes that was a user-space copy of several MiB per
// request. `keepUnparsed` avoids it: once the buffer holds only the start of the next message,
// that start moves into storage of its own, sized for the whole message, so every later read is
// appended once, in place, without growing the buffer again.

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

    /// Called when the unparsed bytes are the incomplete start of a message of `messageBytes`
    /// bytes: moves them into a buffer of their own with room for the whole message, unless
    /// they already start this buffer's storage and it has the room. Each unparsed byte is
    /// copied at most once this way, since afterwards the bytes start a buffer that fits.
    public mutating func keepUnparsed(messageBytes: Int, allocator: ByteBufferAllocator) {
        let unparsed = self.readableBytes
        guard unparsed > 0, messageBytes > unparsed else { return }
        guard self.readerIndex > 0 || self.capacity < messageBytes else { return }
        var own = allocator.buffer(capacity: messageBytes)
        own.writeBuffer(&self)
        self = own
    }
}
