// STARTTLS in the negotiation state machine, without sockets, mode by mode as proto.md "TLS
// support" states it (NOTLS, SELECTIVETLS, FORCEDTLS), and engine errors in negotiation: only
// an absent export is NBD_REP_ERR_UNKNOWN.
//
// The story of the engine-error tests: PoolCatalog and EXPORT_NAME used `try?`, so an I/O error
// or a failed pool while opening an export reached the client as "unknown export" (or a silent
// close) and reached no log at all.

import Foundation
import NIOCore
import StrataCore
@testable import StrataNBD
import Testing

/// A catalog whose lookups fail with `code` for the names in `failing`.
struct FailingCatalog: NBDExportCatalog {
    var inner = FakeCatalog()
    var failing: [String: StrataError.Code] = ["broken": .io]
    var listFails: StrataError.Code? = nil

    func exports() throws(StrataError) -> [NBDExport] {
        if let code = self.listFails { throw StrataError(code, "list exports: metadata page 7 unreadable") }
        return self.inner.exports()
    }

    func export(named name: String) throws(StrataError) -> NBDExport {
        if let code = self.failing[name] { throw StrataError(code, "open \(name): read of metadata page 9 failed (errno=5)") }
        return try self.inner.export(named: name)
    }
}

@Suite struct NBDNegotiationTLSTests {
    let catalog = FakeCatalog()

    func send(_ code: UInt32, _ data: [UInt8] = [], to negotiation: inout NBDNegotiation, catalog: any NBDExportCatalog)
        throws -> NBDNegotiation.Outcome
    {
        var bytes = option(code, data)
        let request = try #require(try NBDWire.decodeOption(&bytes), "the option did not decode whole")
        return negotiation.handle(request, catalog: catalog)
    }

    /// The single reply type of a `.reply` outcome; a test failure for any other outcome.
    func replyType(_ outcome: NBDNegotiation.Outcome, _ what: String) throws -> UInt32 {
        guard case .reply(let bytes, _) = outcome else { throw NegotiationMismatch(what: what, outcome: outcome) }
        let parsed = replies(bytes)
        try #require(parsed.count >= 1, "\(what): no reply")
        return parsed.last!.1
    }

    func startTLS(_ negotiation: inout NBDNegotiation) throws {
        let outcome = try self.send(NBD.Option.startTLS.rawValue, to: &negotiation, catalog: self.catalog)
        guard case .startTLS(let ack) = outcome else { throw NegotiationMismatch(what: "STARTTLS", outcome: outcome) }
        #expect(replies(ack).map(\.1) == [NBD.OptionReply.ack.rawValue])
        #expect(replies(ack).map(\.0) == [NBD.Option.startTLS.rawValue])
        negotiation.tlsStarted()
        #expect(negotiation.tlsActive)
    }

    @Test func offRefusesStartTLSByPolicyAndServesInClear() throws {
        var negotiation = NBDNegotiation(tls: .off)
        let refused = try self.send(NBD.Option.startTLS.rawValue, to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(refused, "STARTTLS with TLS off") == NBD.OptionReply.errorPolicy.rawValue)
        #expect(!negotiation.tlsActive)
        let list = try self.send(NBD.Option.list.rawValue, to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(list, "LIST") == NBD.OptionReply.ack.rawValue)
        let go = try self.send(NBD.Option.go.rawValue, infoData("vm1", []), to: &negotiation, catalog: self.catalog)
        guard case .start = go else { throw NegotiationMismatch(what: "GO in clear text with TLS off", outcome: go) }
    }

    @Test func onServesClearTextAndUpgradesOnceForgettingWhatWasNegotiated() throws {
        var negotiation = NBDNegotiation(tls: .on)
        let list = try self.send(NBD.Option.list.rawValue, to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(list, "LIST before TLS") == NBD.OptionReply.ack.rawValue)
        let structured = try self.send(NBD.Option.structuredReply.rawValue, to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(structured, "STRUCTURED_REPLY") == NBD.OptionReply.ack.rawValue)
        #expect(negotiation.structuredReplies)
        // STARTTLS with data is malformed.
        let withData = try self.send(NBD.Option.startTLS.rawValue, [1], to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(withData, "STARTTLS with data") == NBD.OptionReply.errorInvalid.rawValue)
        try self.startTLS(&negotiation)
        // What was negotiated in clear text is forgotten: structured replies must be asked again.
        #expect(!negotiation.structuredReplies)
        let again = try self.send(NBD.Option.startTLS.rawValue, to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(again, "a second STARTTLS") == NBD.OptionReply.errorInvalid.rawValue)
        let go = try self.send(NBD.Option.go.rawValue, infoData("vm1", []), to: &negotiation, catalog: self.catalog)
        guard case .start(_, let export) = go else { throw NegotiationMismatch(what: "GO under TLS", outcome: go) }
        #expect(export.name == "vm1")
        #expect(!negotiation.transmissionFlags(for: export).contains(.sendDF))
    }

    @Test(arguments: [
        NBD.Option.list, .info, .go, .structuredReply, .listMetaContext, .setMetaContext, .peekExport, .extendedHeaders,
    ])
    func requireAnswersEveryOtherOptionTLSRequired(_ refused: NBD.Option) throws {
        var negotiation = NBDNegotiation(tls: .require)
        let data = refused == .info || refused == .go ? infoData("vm1", []) : []
        let outcome = try self.send(refused.rawValue, data, to: &negotiation, catalog: self.catalog)
        guard case .reply(let bytes, nil) = outcome else {
            throw NegotiationMismatch(what: "\(refused) before TLS under require", outcome: outcome)
        }
        let parsed = replies(bytes)
        #expect(parsed.map(\.1) == [NBD.OptionReply.errorTLSRequired.rawValue], "\(refused)")
        #expect(parsed.first?.0 == refused.rawValue)
        #expect(!negotiation.structuredReplies)
    }

    @Test func requireRefusesUnknownOptionsAndExportNameThenServesUnderTLS() throws {
        var negotiation = NBDNegotiation(tls: .require)
        let unknown = try self.send(99, to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(unknown, "an unknown option before TLS") == NBD.OptionReply.errorTLSRequired.rawValue)
        // EXPORT_NAME cannot be answered with an error: the session ends, with no export.
        var closing = negotiation
        let exportName = try self.send(NBD.Option.exportName.rawValue, Array("vm1".utf8), to: &closing, catalog: self.catalog)
        guard case .close(let bytes, nil) = exportName else {
            throw NegotiationMismatch(what: "EXPORT_NAME before TLS under require", outcome: exportName)
        }
        #expect(bytes.readableBytes == 0)
        // ABORT is allowed before TLS.
        var aborting = negotiation
        let abort = try self.send(NBD.Option.abort.rawValue, to: &aborting, catalog: self.catalog)
        guard case .close(let ack, nil) = abort else { throw NegotiationMismatch(what: "ABORT before TLS", outcome: abort) }
        #expect(replies(ack).map(\.1) == [NBD.OptionReply.ack.rawValue])
        // After STARTTLS, nothing is refused for want of TLS.
        try self.startTLS(&negotiation)
        let list = try self.send(NBD.Option.list.rawValue, to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(list, "LIST under TLS") == NBD.OptionReply.ack.rawValue)
        let unsupported = try self.send(99, to: &negotiation, catalog: self.catalog)
        #expect(try self.replyType(unsupported, "an unknown option under TLS") == NBD.OptionReply.errorUnsupported.rawValue)
        let exportNameUnderTLS = try self.send(
            NBD.Option.exportName.rawValue, Array("vm1@s1".utf8), to: &negotiation, catalog: self.catalog)
        guard case .start(_, let export) = exportNameUnderTLS else {
            throw NegotiationMismatch(what: "EXPORT_NAME under TLS", outcome: exportNameUnderTLS)
        }
        #expect(export.readOnly)
    }

    @Test func onlyAnAbsentExportIsUnknown() throws {
        var negotiation = NBDNegotiation()
        let catalog = FailingCatalog()
        for code in [NBD.Option.info, .go] {
            let absent = try self.send(code.rawValue, infoData("ghost", []), to: &negotiation, catalog: catalog)
            guard case .reply(let bytes, let logged) = absent else { throw NegotiationMismatch(what: "\(code) ghost", outcome: absent) }
            #expect(replies(bytes).map(\.1) == [NBD.OptionReply.errorUnknown.rawValue])
            #expect(logged == nil, "an absent export is not an engine error")

            let failed = try self.send(code.rawValue, infoData("broken", []), to: &negotiation, catalog: catalog)
            guard case .reply(let reply, let engineError) = failed else {
                throw NegotiationMismatch(what: "\(code) of an export the engine fails to open", outcome: failed)
            }
            let parsed = replies(reply)
            #expect(parsed.map(\.1) == [NBD.OptionReply.errorPlatform.rawValue])
            var message = parsed[0].2
            #expect(message.readString(length: message.readableBytes)?.contains("metadata page 9") == true)
            #expect(engineError?.code == .io)
        }
        // EXPORT_NAME can only close, but the engine error goes to the log.
        let exportName = try self.send(NBD.Option.exportName.rawValue, Array("broken".utf8), to: &negotiation, catalog: catalog)
        guard case .close(_, let engineError) = exportName else {
            throw NegotiationMismatch(what: "EXPORT_NAME of a broken export", outcome: exportName)
        }
        #expect(engineError?.code == .io)
        let ghost = try self.send(NBD.Option.exportName.rawValue, Array("ghost".utf8), to: &negotiation, catalog: catalog)
        guard case .close(_, nil) = ghost else { throw NegotiationMismatch(what: "EXPORT_NAME ghost", outcome: ghost) }
        // LIST: a failing catalog is an error reply, not an empty list.
        let list = try self.send(NBD.Option.list.rawValue, to: &negotiation, catalog: FailingCatalog(listFails: .corrupt))
        guard case .reply(let listBytes, let listError) = list else { throw NegotiationMismatch(what: "LIST", outcome: list) }
        #expect(replies(listBytes).map(\.1) == [NBD.OptionReply.errorPlatform.rawValue])
        #expect(listError?.code == .corrupt)
    }

    @Test(arguments: [
        (StrataError.Code.notFound, NBD.OptionReply.errorUnknown), (.invalidArgument, .errorInvalid),
        (.unauthorized, .errorPolicy), (.busy, .errorPolicy), (.io, .errorPlatform), (.failed, .errorPlatform),
    ])
    func engineErrorsMapToOneOptionReply(_ code: StrataError.Code, _ reply: NBD.OptionReply) {
        #expect(StrataError(code, "x").nbdOptionReply == reply)
    }

    @Test func pskFilesParseAsNbdkitWritesThem() throws {
        let path = "/tmp/strata-psk-test-\(UInt64.random(in: 0...UInt64.max))"
        defer { unlinkFile(path) }
        try writeFile(path, "alice:0123456789abcdefABCDEF\n\nbob:00ff\n")
        let keys = try NBDTLS.readPSKFile(path)
        #expect(keys["alice"] == [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0xAB, 0xCD, 0xEF])
        #expect(keys["bob"] == [0x00, 0xFF])
        for bad in ["alice", ":00ff", "alice:0g", "alice:abc", "alice:"] {
            try writeFile(path, bad + "\n")
            #expect(throws: StrataError.self, "\(bad)") { try NBDTLS.readPSKFile(path) }
        }
        let missing = #expect(throws: StrataError.self) { try NBDTLS.readPSKFile(path + ".absent") }
        #expect(missing?.code == .notFound)
    }

    @Test func tlsSettingsThatContradictAreRefusedBeforeAnyFileIsRead() {
        let cases: [NBDTLSSettings] = [
            NBDTLSSettings(mode: .off, verifyPeer: true),
            NBDTLSSettings(mode: .off, pskFile: "/nonexistent"),
            NBDTLSSettings(mode: .on),
            NBDTLSSettings(mode: .require, certificatesDirectory: "/nonexistent", pskFile: "/nonexistent"),
            NBDTLSSettings(mode: .on, verifyPeer: true, pskFile: "/nonexistent"),
        ]
        for settings in cases {
            let error = #expect(throws: StrataError.self, "\(settings)") { try NBDTLS.load(settings) }
            #expect(error?.code == .invalidArgument, "\(settings)")
        }
        #expect(throws: Never.self) {
            let off = try NBDTLS.load(NBDTLSSettings(mode: .off))
            #expect(off == nil, "TLS off loads nothing")
            // Certificates with NBD TLS off serve replication (`serve` decides whether anything
            // uses them); NBD loads nothing and reads no file.
            let replicationOnly = try NBDTLS.load(NBDTLSSettings(mode: .off, certificatesDirectory: "/nonexistent"))
            #expect(replicationOnly == nil, "TLS off loads nothing")
        }
    }
}

func writeFile(_ path: String, _ text: String) throws {
    try text.write(toFile: path, atomically: false, encoding: .utf8)
}

func unlinkFile(_ path: String) { try? FileManager.default.removeItem(atPath: path) }
