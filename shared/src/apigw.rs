//! API Gateway HTTP API (payload v2) events, built with `aws_lambda_events`' own type: for the
//! sample files in `events/`, for `cargo lambda invoke`, and for tests that go through
//! lambda_http's real event conversion (base64 included).

use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext};
use base64::Engine;
use lambda_http::http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The request lambda_http makes of an HTTP API (payload 2.0) event (its own conversion: path
/// with the stage, URI, headers, method, extensions), with the body **moved** in instead of
/// copied. Through `lambda_http::run` a body is held three more times at once (the event copied
/// whole to try each event type, the body copied again into the request): 20 MiB more at the
/// peak for a 10 MiB body (docs/design.md "Memory").
pub fn request_from_event(
    mut event: ApiGatewayV2httpRequest,
    context: lambda_http::Context,
) -> lambda_http::Request {
    use lambda_http::{Body, RequestExt};
    let body = event.body.take();
    let base64 = event.is_base64_encoded;
    let mut request: lambda_http::Request =
        lambda_http::request::LambdaRequest::ApiGatewayV2(event).into();
    *request.body_mut() = match body {
        None => Body::Empty,
        // Decoding makes the bytes; the text itself is freed right after.
        Some(text) if base64 => Body::from_maybe_encoded(true, &text),
        Some(text) => Body::Text(text),
    };
    request.with_lambda_context(context)
}

/// The HTTP API (payload 2.0) answer lambda_http would send for `response`: status, headers
/// (`set-cookie` moved to `cookies`), and the body, base64 when it is binary.
pub fn event_response(
    response: lambda_http::Response<lambda_http::Body>,
) -> aws_lambda_events::event::apigw::ApiGatewayV2httpResponse {
    use lambda_http::http::header::SET_COOKIE;
    use lambda_http::Body;
    let (parts, body) = response.into_parts();
    let (is_base64_encoded, body) = match body {
        Body::Empty => (false, None),
        b @ Body::Text(_) => (false, Some(b)),
        b @ Body::Binary(_) => (true, Some(b)),
        _ => (false, None),
    };
    let mut headers = parts.headers;
    let cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    headers.remove(SET_COOKIE);
    let mut out = aws_lambda_events::event::apigw::ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = headers;
    out.body = body;
    out.is_base64_encoded = is_base64_encoded;
    out.cookies = cookies;
    out
}

/// A request as a provider sends it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: Method,
    /// Path without query, e.g. `/trybe` or `/tribemade/<token>`.
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body base64-encoded, as API Gateway does for binary media types.
    pub base64: bool,
}

impl Sent {
    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> Self {
        Sent {
            method: Method::POST,
            path: path.into(),
            query: None,
            headers: Vec::new(),
            body: body.into(),
            base64: false,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// The API Gateway HTTP API event for this request.
    pub fn to_event(&self) -> ApiGatewayV2httpRequest {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value),
            ) {
                headers.append(n, v);
            }
        }
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.http.method = self.method.clone();
        context.http.path = Some(self.path.clone());
        context.http.protocol = Some("HTTP/1.1".into());
        context.http.source_ip = Some("127.0.0.1".into());
        context.stage = Some("$default".into());
        context.route_key = Some("$default".into());
        context.request_id = Some("sample-request".into());
        context.account_id = Some("123456789012".into());
        context.apiid = Some("sample".into());
        let mut event = ApiGatewayV2httpRequest::default();
        event.version = Some("2.0".into());
        event.route_key = Some("$default".into());
        event.raw_path = Some(self.path.clone());
        event.raw_query_string = Some(self.query.clone().unwrap_or_default());
        event.headers = headers;
        event.request_context = context;
        match (self.base64, std::str::from_utf8(&self.body)) {
            (false, Ok(text)) => event.body = Some(text.to_owned()),
            _ => {
                event.body = Some(base64::engine::general_purpose::STANDARD.encode(&self.body));
                event.is_base64_encoded = true;
            }
        }
        event
    }

    /// The event as a JSON file for `cargo lambda invoke --data-file`: without null fields and
    /// without the v1-only `httpMethod` (which the type fills with GET; v2 carries the method in
    /// `requestContext.http.method`).
    pub fn to_event_json(&self) -> serde_json::Value {
        fn strip_nulls(v: &mut serde_json::Value) {
            if let serde_json::Value::Object(map) = v {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip_nulls);
            }
        }
        let mut json = serde_json::to_value(self.to_event()).expect("event serializes");
        strip_nulls(&mut json);
        if let serde_json::Value::Object(map) = &mut json {
            map.remove("httpMethod");
        }
        json
    }

    /// The request as lambda_http hands it to a function.
    pub fn to_request(&self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.to_event_json().to_string())
            .expect("lambda_http reads its own event type")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;

    #[test]
    fn base64_bodies_arrive_decoded_and_text_bodies_verbatim() {
        let binary = Sent {
            base64: true,
            ..Sent::post("/x", b"\x00\xffraw".to_vec())
        }
        .to_request();
        assert_eq!(binary.body().as_ref(), b"\x00\xffraw");
        let mut sent = Sent::post("/t/abc", "{\"a\": 1}").header("Signature", "ab");
        sent.query = Some("x=1&y=2".into());
        let req = sent.to_request();
        assert!(matches!(req.body(), Body::Text(t) if t == "{\"a\": 1}"));
        assert_eq!(req.headers()["signature"], "ab");
        assert_eq!(req.uri().path(), "/t/abc");
        assert_eq!(req.uri().query(), Some("x=1&y=2"));
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            Sent::post("/", "")
                .method(Method::PUT)
                .to_request()
                .method(),
            Method::PUT
        );
    }

    /// What the functions run (`request_from_event`) is what lambda_http makes of the same
    /// event, body moved instead of copied: method, URI (stage, query), headers, body.
    #[test]
    fn the_moved_body_request_equals_lambda_https_own() {
        let context = || lambda_http::Context::default();
        let mut with_query = Sent::post("/tilby/tok-123/sales/closed", "{\"a\": 1.10}")
            .header("content-type", "application/json")
            .header("x-sig", "ab");
        with_query.query = Some("x=1&y=%20".into());
        let binary = Sent {
            base64: true,
            ..Sent::post("/trifft", b"<n>caf\xe9</n>".to_vec())
        };
        let empty = Sent::post("/trybe", "").method(Method::DELETE);
        for sent in [with_query, binary, empty] {
            let theirs = sent.to_request();
            let mut event = sent.to_event();
            event.request_context.stage = Some("prod".into());
            let staged = lambda_http::request::from_str(
                &serde_json::to_string(&{
                    let mut e = sent.to_event_json();
                    e["requestContext"]["stage"] = "prod".into();
                    e
                })
                .unwrap(),
            )
            .unwrap();
            let ours = request_from_event(event, context());
            assert_eq!(ours.method(), staged.method());
            assert_eq!(
                ours.uri(),
                staged.uri(),
                "the stage in the path, as lambda_http puts it"
            );
            assert_eq!(ours.headers(), staged.headers());
            assert_eq!(ours.body().as_ref(), theirs.body().as_ref());
            assert_eq!(
                std::mem::discriminant(ours.body()),
                std::mem::discriminant(theirs.body()),
                "text stays text, base64 becomes bytes"
            );
        }
    }

    #[test]
    fn answers_become_http_api_responses() {
        let text = lambda_http::Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .header("set-cookie", "a=1")
            .body(Body::Text("{}".into()))
            .unwrap();
        let out = event_response(text);
        assert_eq!(out.status_code, 401);
        assert_eq!(out.headers["content-type"], "application/json");
        assert!(out.headers.get("set-cookie").is_none());
        assert_eq!(out.cookies, vec!["a=1".to_owned()]);
        assert!(matches!(out.body, Some(Body::Text(ref t)) if t == "{}"));
        assert!(!out.is_base64_encoded);
        let binary = lambda_http::Response::new(Body::Binary(vec![0, 255]));
        let out = event_response(binary);
        assert!(out.is_base64_encoded);
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json["body"], "AP8=", "binary bodies go back as base64");
        assert!(event_response(lambda_http::Response::new(Body::Empty))
            .body
            .is_none());
    }
}
