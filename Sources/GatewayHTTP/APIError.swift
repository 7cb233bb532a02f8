import Foundation
import Gateway
import HTTPTypes
import Hummingbird
import NIOCore
import SwarmJSON

/// An error answered as `{"error": "<message>", "code": "<code>"}` with `status`.
///
/// | code | status | cause |
/// |---|---|---|
/// | `unauthorized` | 401 | missing or wrong bearer token (with `WWW-Authenticate: Bearer`) |
/// | `notFound` | 404 | no such route (or no such method on it) |
/// | `unknownDevice` | 404 | ``GatewayError/unknownDevice(_:)`` |
/// | `invalidName` | 400 | a device id, group or command name outside `[A-Za-z0-9._:-]{1,128}` |
/// | `invalidJSON` | 400 | a body that is not JSON |
/// | `invalidBody` | 400 | JSON of the wrong shape (for example a desired patch that is not an object) |
/// | `invalidTimeout` | 400 | `timeout` not an integer in 1…max milliseconds |
/// | `invalidIfMatch` | 400 | an `If-Match` that is not `"<version>"` (or `*`) |
/// | `invalidTTL` | 400 | `ttl` not an integer number of seconds in 1…2,592,000 (30 days) |
/// | `unknownCommand` | 404 | no queued command with that id on the device |
/// | `deviceOffline` | 409 | a synchronous command (no `ttl`) to an offline device |
/// | `tooManyCommands` | 429 | the device has 100 pending queued commands |
/// | `invalidQuery` | 400 | a fleet-search `where` that does not parse; the body adds `"position"` (1-based character) |
/// | `invalidLimit`, `invalidCursor` | 400 | a search `limit` outside 1…1000, a `cursor` that is no page's `next` |
/// | `versionConflict` | 412 | ``GatewayError/versionConflict(current:)``; the body adds `"version": current` |
/// | `credentialsNotManaged` | 422 | a provisioning `password` where the gateway does not manage logins |
/// | `payloadTooLarge` | 413 | a body over the limit |
/// | `invalidReply` | 502 | the device answered a command with something that is not JSON |
/// | `brokerUnavailable`, `notRunning`, `cluster`, `notReplicated` | 503 | the gateway, its broker or the cluster cannot serve (or could not replicate a write) |
/// | `storeUnavailable` | 503 | the durable store did not commit the write (disk full, database down) or the node is still recovering its devices from it: the write is not stored |
/// | `commandTimeout` | 504 | the device did not answer the command in time |
/// | `internal` | 500 | anything else (a bug) |
public struct APIError: Error, Sendable, Hashable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// More members of the error body (for example `version` of a `versionConflict`).
    public var details: [String: JSONValue] = [:]

    public init(_ status: HTTPResponse.Status, code: String, _ message: String, details: [String: JSONValue] = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
    }

    static let unauthorized = APIError(.unauthorized, code: "unauthorized", "missing or invalid bearer token")
    static let notFound = APIError(.notFound, code: "notFound", "no such route")

    static func tooLarge(_ limit: Int) -> APIError {
        APIError(.contentTooLarge, code: "payloadTooLarge", "request body exceeds \(limit) bytes")
    }

    static func invalidJSON(_ why: String) -> APIError { APIError(.badRequest, code: "invalidJSON", why) }
    static func invalidBody(_ why: String) -> APIError { APIError(.badRequest, code: "invalidBody", why) }

    /// The documented HTTP mapping of the gateway's errors.
    init(_ error: GatewayError) {
        switch error {
        case .unknownDevice: self.init(.notFound, code: "unknownDevice", error.description)
        case .invalidName: self.init(.badRequest, code: "invalidName", error.description)
        case .invalidBody: self.init(.badRequest, code: "invalidBody", error.description)
        case .commandTimeout: self.init(.gatewayTimeout, code: "commandTimeout", error.description)
        case .invalidReply: self.init(.badGateway, code: "invalidReply", error.description)
        case .brokerUnavailable: self.init(.serviceUnavailable, code: "brokerUnavailable", error.description)
        case .notRunning: self.init(.serviceUnavailable, code: "notRunning", error.description)
        case .cluster: self.init(.serviceUnavailable, code: "cluster", error.description)
        case .versionConflict(let current):
            self.init(.preconditionFailed, code: "versionConflict", error.description, details: ["version": .int(current)])
        case .notReplicated: self.init(.serviceUnavailable, code: "notReplicated", error.description)
        case .storeUnavailable: self.init(.serviceUnavailable, code: "storeUnavailable", error.description)
        case .credentialsNotManaged: self.init(.unprocessableContent, code: "credentialsNotManaged", error.description)
        case .deviceOffline: self.init(.conflict, code: "deviceOffline", error.description)
        case .tooManyCommands: self.init(.tooManyRequests, code: "tooManyCommands", error.description)
        case .unknownCommand: self.init(.notFound, code: "unknownCommand", error.description)
        case .invalidQuery(let query):
            self.init(.badRequest, code: "invalidQuery", query.description, details: ["position": .int(Int64(query.position))])
        }
    }

    /// Any error thrown below the API middleware, as the API answers it.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let error as APIError: return error
        case let error as GatewayError: return APIError(error)
        case is NIOTooManyBytesError: return APIError(.contentTooLarge, code: "payloadTooLarge", "request body too large")
        case let error as HTTPError:
            switch error.status {
            case .notFound: return .notFound
            case .contentTooLarge: return APIError(.contentTooLarge, code: "payloadTooLarge", "request body too large")
            default:
                return APIError(error.status, code: error.status.code < 500 ? "badRequest" : "internal", error.body ?? error.status.reasonPhrase)
            }
        case let error as any HTTPResponseError:
            return APIError(error.status, code: error.status.code < 500 ? "badRequest" : "internal", error.status.reasonPhrase)
        default:
            return APIError(.internalServerError, code: "internal", "internal error")
        }
    }

    /// The JSON response.
    func response() -> Response {
        var members = details
        members["error"] = .string(message)
        members["code"] = .string(code)
        let body = JSONValue.object(members)
        var response = Response.json(body.serialized(), status: status)
        if status == .unauthorized { response.headers[.wwwAuthenticate] = "Bearer" }
        return response
    }
}

extension Response {
    /// A JSON response from already encoded bytes.
    static func json(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// A twin with its `ETag: "<desired version>"`.
    static func twin(_ twin: TwinBytes, status: HTTPResponse.Status = .ok) -> Response {
        var response = json(twin.json, status: status)
        response.headers[.eTag] = "\"\(twin.version)\""
        return response
    }

    /// A JSON response from a value.
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        json(value.serialized(), status: status)
    }

    /// A JSON response from an `Encodable` (sorted keys).
    static func json(encoding value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return json(Array(try encoder.encode(value)), status: status)
    }
}
