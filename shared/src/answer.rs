//! Every HTTP answer a receiver gives, decided in one place (README "Answers").

use lambda_http::http::{header, StatusCode};
use lambda_http::{Body, Response};
use serde_json::{json, Value};

use crate::provider::Refusal;

/// Outcome of a request, before it becomes an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Every event durably queued now or earlier.
    Accepted {
        event_id: Option<String>,
        queued: usize,
        duplicates: usize,
        events: usize,
        ack: Option<Value>,
    },
    /// Handshake or test request answered as the provider expects.
    Reply {
        status: StatusCode,
        body: Value,
    },
    Unauthorized,
    Refused(Refusal),
    MethodNotAllowed {
        allow: String,
    },
    PayloadTooLarge,
    /// Storage or queue failed, or a first delivery is still in flight: the provider must retry.
    Unavailable {
        retry_after_secs: u64,
    },
    /// The receiver is misconfigured (no secret): refuse everything.
    Misconfigured,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Accepted { .. } => StatusCode::OK,
            Answer::Reply { status, .. } => *status,
            Answer::Unauthorized | Answer::Refused(Refusal::Unauthorized(_)) => {
                StatusCode::UNAUTHORIZED
            }
            Answer::Refused(Refusal::BadRequest(_)) => StatusCode::BAD_REQUEST,
            Answer::Refused(Refusal::UnsupportedMediaType) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Answer::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Answer::PayloadTooLarge
            | Answer::Refused(Refusal::TooManyEvents(_) | Refusal::TooLarge(_)) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Answer::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Answer::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short label for logs and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Answer::Accepted { queued: 0, .. } => "duplicate",
            Answer::Accepted { .. } => "accepted",
            Answer::Reply { .. } => "handshake",
            Answer::Unauthorized | Answer::Refused(Refusal::Unauthorized(_)) => "unauthorized",
            Answer::Refused(Refusal::BadRequest(_)) => "bad_request",
            Answer::Refused(Refusal::UnsupportedMediaType) => "unsupported_media_type",
            Answer::MethodNotAllowed { .. } => "method_not_allowed",
            Answer::PayloadTooLarge
            | Answer::Refused(Refusal::TooManyEvents(_) | Refusal::TooLarge(_)) => "too_large",
            Answer::Unavailable { .. } => "unavailable",
            Answer::Misconfigured => "misconfigured",
        }
    }

    fn body(&self) -> Value {
        match self {
            Answer::Accepted { ack: Some(ack), .. } => ack.clone(),
            Answer::Accepted {
                event_id,
                queued,
                duplicates,
                events,
                ..
            } => {
                let mut body = json!({ "status": self.outcome() });
                match event_id {
                    Some(id) if *events == 1 => body["event_id"] = json!(id),
                    _ => {
                        body["events"] = json!(events);
                        body["queued"] = json!(queued);
                        body["duplicates"] = json!(duplicates);
                    }
                }
                body
            }
            Answer::Reply { body, .. } => body.clone(),
            Answer::Refused(Refusal::BadRequest(why)) => {
                json!({ "status": "bad_request", "error": why })
            }
            Answer::Unavailable { .. } => {
                json!({ "status": "unavailable", "error": "temporarily unavailable, retry later" })
            }
            Answer::Misconfigured => {
                json!({ "status": "error", "error": "receiver not configured" })
            }
            other => json!({ "status": other.outcome() }),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store");
        match &self {
            Answer::Unavailable { retry_after_secs } => {
                builder = builder.header(header::RETRY_AFTER, retry_after_secs.max(&1).to_string());
            }
            Answer::MethodNotAllowed { allow } => {
                builder = builder.header(header::ALLOW, allow.as_str())
            }
            _ => {}
        }
        builder
            .body(Body::Text(self.body().to_string()))
            .expect("static headers are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::AuthFailure;

    #[test]
    fn each_answer_has_its_status_and_headers() {
        let cases = [
            (Answer::Unauthorized, 401),
            (
                Answer::Refused(Refusal::Unauthorized(AuthFailure::Stale)),
                401,
            ),
            (Answer::Refused(Refusal::BadRequest("x".into())), 400),
            (Answer::Refused(Refusal::UnsupportedMediaType), 415),
            (
                Answer::MethodNotAllowed {
                    allow: "POST".into(),
                },
                405,
            ),
            (Answer::PayloadTooLarge, 413),
            (
                Answer::Unavailable {
                    retry_after_secs: 0,
                },
                503,
            ),
            (Answer::Misconfigured, 500),
        ];
        for (answer, code) in cases {
            assert_eq!(
                answer.clone().into_response().status().as_u16(),
                code,
                "{answer:?}"
            );
        }
        let r = Answer::Unavailable {
            retry_after_secs: 0,
        }
        .into_response();
        assert_eq!(r.headers()["retry-after"], "1");
        let r = Answer::MethodNotAllowed {
            allow: "POST".into(),
        }
        .into_response();
        assert_eq!(r.headers()["allow"], "POST");
    }

    #[test]
    fn accepted_body_names_the_event_or_counts_a_batch() {
        let one = Answer::Accepted {
            event_id: Some("e1".into()),
            queued: 1,
            duplicates: 0,
            events: 1,
            ack: None,
        };
        assert_eq!(one.body(), json!({"status": "accepted", "event_id": "e1"}));
        let dup = Answer::Accepted {
            event_id: Some("e1".into()),
            queued: 0,
            duplicates: 1,
            events: 1,
            ack: None,
        };
        assert_eq!(dup.body(), json!({"status": "duplicate", "event_id": "e1"}));
        let batch = Answer::Accepted {
            event_id: None,
            queued: 3,
            duplicates: 2,
            events: 5,
            ack: None,
        };
        assert_eq!(
            batch.body(),
            json!({"status": "accepted", "events": 5, "queued": 3, "duplicates": 2})
        );
    }
}
