import HTTPTypes
import Hummingbird
import NIOCore

/// The live dashboard every node serves: static HTML, CSS and plain JavaScript
/// from `Sources/GatewayHTTP/Dashboard/`, compiled into the module with SwiftPM's
/// `.embedInCode` resources (`PackageResources`), so the binary needs no resource bundle at
/// run time — debug or release, run from any directory, copied anywhere.
///
/// | route | asset |
/// |---|---|
/// | `GET /`, `GET /dashboard`, `GET /dashboard/` | `index.html` |
/// | `GET /dashboard/app.js` | `app.js` |
/// | `GET /dashboard/style.css` | `style.css` |
///
/// The routes are open (no token); the page's own `/v1` calls send `Authorization: Bearer <token>`
/// when the user entered one. Answers carry `Cache-Control: no-cache`, `X-Content-Type-Options:
/// nosniff` and a Content-Security-Policy that allows this origin only (no inline script, no CDN).
enum Dashboard {
    struct Asset: Sendable {
        let contentType: String
        let bytes: [UInt8]
    }

    static let index = Asset(contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html)
    static let script = Asset(contentType: "text/javascript; charset=utf-8", bytes: PackageResources.app_js)
    static let style = Asset(contentType: "text/css; charset=utf-8", bytes: PackageResources.style_css)

    /// Everything the page may load or call: this origin only.
    static let contentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static func addRoutes(to router: Router<BasicRequestContext>) {
        // Hummingbird ignores a trailing slash: `/dashboard` also answers `/dashboard/`.
        router.get("/") { _, _ in response(index) }
        router.get("/dashboard") { _, _ in response(index) }
        router.get("/dashboard/app.js") { _, _ in response(script) }
        router.get("/dashboard/style.css") { _, _ in response(style) }
    }

    static func response(_ asset: Asset) -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: asset.contentType, .cacheControl: "no-cache", HTTPField.Name("X-Content-Type-Options")!: "nosniff",
                .contentSecurityPolicy: contentSecurityPolicy,
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: asset.bytes)))
    }
}
