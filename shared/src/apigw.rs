//! API Gateway HTTP API (payload v2) events, built with `aws_lambda_events`' own type: for the
//! sample files in `events/`, for `cargo lambda invoke`, and for tests that go through
//! lambda_http's real event conversion (base64 included).

use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext};
use base64::Engine;
use lambda_http::http::{HeaderMap, HeaderName, HeaderValue, Method};

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
}
