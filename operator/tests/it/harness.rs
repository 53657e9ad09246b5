//! A mocked API server (tower-test): each test scripts the exact requests it expects, in order,
//! and answers them. A missing call times out; an unexpected one fails the method/path check
//! or leaves the reconcile waiting until its own timeout. The objects the reconcile reads from
//! its caches are given to it up front ([`Contents`]); every request that reaches the API
//! server is counted.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tributary_crds::StreamingIngestion;
use tributary_operator::cache::{Cache, Contents};
use tributary_operator::metrics::Metrics;
use tributary_operator::reconcile::{Context, reconcile};
use tributary_operator::resources::Settings;

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type SendResponse = tower_test::mock::SendResponse<Response<Body>>;

pub const WAIT: Duration = Duration::from_secs(5);

/// One request the client sent.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Value,
    send: SendResponse,
}

impl Call {
    pub fn respond(self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("serialisable response");
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("response builds");
        self.send.send_response(response);
    }

    pub fn ok(self, body: &Value) {
        self.respond(StatusCode::OK, body)
    }

    /// Answers a server-side apply with the applied object, as the API server would.
    pub fn echo(self) {
        let body = self.body.clone();
        self.ok(&body)
    }

    pub fn not_found(self) {
        self.respond(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }

    /// Asserts a server-side apply by the operator, forced.
    pub fn assert_apply(&self) {
        assert_eq!(self.method, Method::PATCH, "{}", self.path);
        assert_eq!(
            self.query.get("fieldManager").map(String::as_str),
            Some("tributary-operator"),
            "{}",
            self.path
        );
        assert_eq!(
            self.query.get("force").map(String::as_str),
            Some("true"),
            "{}",
            self.path
        );
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{}",
            self.path
        );
    }

    pub fn str_at(&self, pointer: &str) -> &str {
        self.body
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} missing in {} body {}", self.path, self.body))
    }
}

/// Waits for the next request and checks its method and path.
pub async fn expect(handle: &mut Handle, method: Method, path: &str) -> Call {
    let (request, send) = tokio::time::timeout(WAIT, handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("expected {method} {path}, but no request came"))
        .unwrap_or_else(|| panic!("expected {method} {path}, but the client is gone"));
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_string(), decode(v)))
                .collect()
        })
        .unwrap_or_default();
    let call = Call {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
        send,
    };
    assert_eq!(
        (&call.method, call.path.as_str()),
        (&method, path),
        "unexpected request"
    );
    call
}

fn decode(value: &str) -> String {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// A list response.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// How one reconcile went.
pub struct Outcome {
    pub result: Result<Action, tributary_operator::Error>,
    /// Requests the reconcile sent to the API server (events included).
    pub api_calls: usize,
}

/// A client whose every request is counted, talking to a scripted API server.
pub fn counted_client() -> (kube::Client, Handle, Arc<AtomicUsize>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = tower::ServiceBuilder::new()
        .map_request(move |request: Request<Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            request
        })
        .service(service);
    (kube::Client::new(service, "default"), handle, calls)
}

/// The cache of a namespace holding only these ingestions.
pub fn only(ingestions: &[&StreamingIngestion]) -> Contents {
    Contents {
        ingestions: ingestions.iter().map(|si| (*si).clone()).collect(),
        ..Contents::default()
    }
}

/// Runs one reconcile of `ingestion` against a scripted API server, with its caches holding
/// `cached`; returns the reconcile's result and its API calls after checking the script ran
/// to its end.
pub async fn run_scenario<F, Fut>(
    ingestion: StreamingIngestion,
    cached: Contents,
    script: F,
) -> Outcome
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Handle> + Send + 'static,
{
    let (client, handle, calls) = counted_client();
    let ctx = Arc::new(Context::new(
        client,
        Settings {
            worker_image: "registry.test/worker:1".into(),
            ..Default::default()
        },
        Arc::new(Metrics::new()),
        Cache::preloaded(cached),
    ));
    let server = tokio::spawn(script(handle));
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        reconcile(Arc::new(ingestion), ctx.clone()),
    )
    .await
    .expect("the reconcile finished in time (a missing answer or an unexpected call?)");
    let handle = tokio::time::timeout(WAIT, server)
        .await
        .expect("the script finished")
        .expect("the script's checks passed");
    drop(handle);
    Outcome {
        result,
        api_calls: calls.load(Ordering::SeqCst),
    }
}

/// A valid continuous ingestion with a Secret reference, a created checkpoint claim and an
/// existing lake claim.
pub fn ingestion(extra_spec: &str) -> StreamingIngestion {
    let text = format!(
        r#"
apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata:
  name: sensors
  namespace: iot
  uid: 5f0c0a4e-0000-4000-8000-00000000abcd
  generation: 2
  resourceVersion: "100"
  creationTimestamp: "2026-02-01T00:00:00Z"
spec:
  source:
    kafka:
      bootstrapServers: kafka:9092
      subscribe: [sensors]
      secretOptions:
        sasl.password: {{secretKeyRef: {{name: kafka-creds, key: password}}}}
  format:
    json:
      schema:
        - {{name: device_id, type: string}}
  sink:
    delta:
      uri: /lake/bronze/sensors
      volume: {{claimName: lake, mountPath: /lake}}
  checkpoint:
    location: /checkpoints/sensors
    volume: {{size: 1Gi}}
{extra_spec}
"#
    );
    serde_saphyr::from_str(&text).expect("fixture parses")
}

pub fn to_value(ingestion: &StreamingIngestion) -> Value {
    serde_json::to_value(ingestion).expect("serialisable")
}

pub const POD_SELECTOR: &str =
    "app.kubernetes.io/name=tributary-worker,tributary.dev/ingestion=sensors";

/// The Secret exists.
pub async fn secret_exists(handle: &mut Handle) {
    expect(handle, Method::GET, "/api/v1/namespaces/iot/secrets/kafka-creds")
        .await
        .ok(&json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "kafka-creds", "namespace": "iot"}}));
}

/// ServiceAccount, Role, RoleBinding, ConfigMap, the checkpoint claim and the disruption
/// budget, applied in order.
pub async fn support_objects_applied(handle: &mut Handle) {
    let sa = expect(
        handle,
        Method::PATCH,
        "/api/v1/namespaces/iot/serviceaccounts/sensors-worker",
    )
    .await;
    sa.assert_apply();
    assert_eq!(sa.str_at("/kind"), "ServiceAccount");
    assert_eq!(
        sa.str_at("/metadata/ownerReferences/0/uid"),
        "5f0c0a4e-0000-4000-8000-00000000abcd"
    );
    sa.echo();

    let role = expect(
        handle,
        Method::PATCH,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/iot/roles/sensors-worker",
    )
    .await;
    role.assert_apply();
    assert_eq!(
        role.body.pointer("/rules/1/resources/0"),
        Some(&json!("streamingingestions/status"))
    );
    assert_eq!(
        role.body.pointer("/rules/1/resourceNames"),
        Some(&json!(["sensors"]))
    );
    assert_eq!(
        role.body.pointer("/rules/1/verbs"),
        Some(&json!(["get", "patch"]))
    );
    role.echo();

    let binding = expect(
        handle,
        Method::PATCH,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/iot/rolebindings/sensors-worker",
    )
    .await;
    binding.assert_apply();
    assert_eq!(binding.str_at("/subjects/0/name"), "sensors-worker");
    binding.echo();

    let config = expect(
        handle,
        Method::PATCH,
        "/api/v1/namespaces/iot/configmaps/sensors-config",
    )
    .await;
    config.assert_apply();
    let manifest = config.str_at("/data/ingestion.yaml");
    assert!(manifest.contains("kind: StreamingIngestion") && manifest.contains("kafka-creds"));
    config.echo();

    let claim = expect(
        handle,
        Method::PATCH,
        "/api/v1/namespaces/iot/persistentvolumeclaims/sensors-checkpoint",
    )
    .await;
    claim.assert_apply();
    assert_eq!(claim.str_at("/spec/resources/requests/storage"), "1Gi");
    assert_eq!(
        claim.body.pointer("/metadata/ownerReferences"),
        None,
        "a retained claim has no owner"
    );
    claim.echo();

    let budget = expect(
        handle,
        Method::PATCH,
        "/apis/policy/v1/namespaces/iot/poddisruptionbudgets/sensors",
    )
    .await;
    budget.assert_apply();
    assert_eq!(budget.body.pointer("/spec/maxUnavailable"), Some(&json!(1)));
    budget.echo();
}

/// The status write: checks the field manager and returns the applied status.
pub async fn status_applied(handle: &mut Handle, ingestion: &StreamingIngestion) -> Value {
    let call = expect(
        handle,
        Method::PATCH,
        "/apis/tributary.dev/v1alpha1/namespaces/iot/streamingingestions/sensors/status",
    )
    .await;
    call.assert_apply();
    assert_eq!(call.str_at("/kind"), "StreamingIngestion");
    assert!(
        call.body.get("spec").is_none(),
        "the operator never writes the spec"
    );
    let status = call.body["status"].clone();
    assert!(
        status.get("workers").is_none(),
        "the workers' entries are theirs"
    );
    let mut answer = to_value(ingestion);
    answer["status"] = status.clone();
    call.ok(&answer);
    status
}

/// An event about the ingestion; returns its reason.
pub async fn event_published(handle: &mut Handle) -> (String, String) {
    let call = expect(
        handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/iot/events",
    )
    .await;
    assert_eq!(call.str_at("/regarding/name"), "sensors");
    assert_eq!(call.str_at("/reportingController"), "tributary-operator");
    let reason = call.str_at("/reason").to_string();
    let note = call
        .body
        .get("note")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let body = call.body.clone();
    call.respond(StatusCode::CREATED, &body);
    (reason, note)
}

/// The condition of a type in an applied status.
pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("condition {type_} missing in {status}"))
}
