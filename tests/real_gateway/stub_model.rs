//! A model provider for a real gateway's agent runs, with no model behind it: an OpenAI-compatible
//! `POST /v1/chat/completions` (streamed or not) on a free loopback port, which plays a plan. A user message
//! holding `PLAN:tool_a,tool_b` is answered with a call to each tool in turn (one per turn, once the
//! previous tool's result is in), then with text; any other conversation (a sub-agent's task, a completion
//! announce) is answered with text. Every request's last user message is kept, for the test to look at.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub struct StubModel {
    pub port: u16,
    asked: Asked,
    task: tokio::task::JoinHandle<()>,
}

/// The last user message of every completion request, in order, and a wake-up for each new one.
#[derive(Clone, Default)]
struct Asked {
    messages: Arc<Mutex<Vec<String>>>,
    more: Arc<tokio::sync::Notify>,
}

impl Drop for StubModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StubModel {
    pub async fn start() -> StubModel {
        let asked = Asked::default();
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .route(
                "/v1/models",
                axum::routing::get(|| async {
                    Json(json!({"object": "list", "data": [{"id": "stub-1", "object": "model"}]}))
                }),
            )
            .with_state(asked.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StubModel { port, asked, task }
    }

    /// The gateway configuration that makes this stub the default model of every agent.
    pub fn gateway_config(&self) -> Value {
        let model = json!({"id": "stub-1", "name": "Stub", "reasoning": false, "input": ["text"],
            "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}, "contextWindow": 128000, "maxTokens": 4096});
        json!({
            "models": {"mode": "merge", "providers": {"stub": {
                "baseUrl": format!("http://127.0.0.1:{}/v1", self.port),
                "apiKey": "stub-key", "api": "openai-completions", "models": [model]}}},
            "agents": {"defaults": {"model": {"primary": "stub/stub-1"}}},
        })
    }

    /// How many requests so far had a last user message containing `text`.
    pub fn asked_containing(&self, text: &str) -> usize {
        self.asked.messages.lock().unwrap().iter().filter(|asked| asked.contains(text)).count()
    }

    /// Waits (at most `limit`) until `count` requests had a last user message containing `text`.
    pub async fn wait_for(&self, text: &str, count: usize, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let more = self.asked.more.notified();
                if self.asked_containing(text) >= count {
                    return;
                }
                more.await;
            }
        })
        .await
        .is_ok()
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|part| part["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// The tool call or text that answers a conversation.
fn decide(body: &Value) -> Result<(String, Value), String> {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let Some(last_user) = messages.iter().rposition(|message| message["role"] == "user") else {
        return Err("pong".into());
    };
    let asked = text_of(&messages[last_user]["content"]);
    let Some(plan) = asked.split("PLAN:").nth(1) else { return Err("pong".into()) };
    let plan: Vec<&str> = plan
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ','))
        .next()
        .unwrap_or("")
        .split(',')
        .collect();
    let done = messages[last_user..].iter().filter(|message| message["role"] == "tool").count();
    let Some(tool) = plan.get(done).filter(|tool| !tool.is_empty()) else {
        return Err(format!("parent done ({done} tools)"));
    };
    let offered = body["tools"].as_array().into_iter().flatten().any(|offered| offered["function"]["name"] == *tool);
    if !offered {
        return Err(format!("tool {tool} not offered"));
    }
    let arguments = match *tool {
        "sessions_spawn" => json!({"task": "CHILD_TASK: reply with the word pong", "label": format!("child-{done}")}),
        _ => json!({}),
    };
    Ok((tool.to_string(), arguments))
}

async fn complete(State(asked): State<Asked>, Json(body): Json<Value>) -> Response {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages.iter().rev().find(|message| message["role"] == "user");
    asked.messages.lock().unwrap().push(last_user.map(|message| text_of(&message["content"])).unwrap_or_default());
    asked.more.notify_waiters();
    let model = body["model"].as_str().unwrap_or("stub-1").to_owned();
    let (message, delta, finish) = match decide(&body) {
        Ok((tool, arguments)) => {
            let call = json!({"id": "call_1", "type": "function",
                "function": {"name": tool, "arguments": arguments.to_string()}});
            let message = json!({"role": "assistant", "content": null, "tool_calls": [call]});
            let delta = json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": tool, "arguments": arguments.to_string()}}]});
            (message, delta, "tool_calls")
        }
        Err(text) => {
            (json!({"role": "assistant", "content": text}), json!({"role": "assistant", "content": text}), "stop")
        }
    };
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if body["stream"] != true {
        let answer = json!({"id": "chatcmpl-stub", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage});
        return Json(answer).into_response();
    }
    let chunk = |choices: Value| json!({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "model": model, "choices": choices});
    let chunks = [
        chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}])),
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}])),
        json!({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}),
    ];
    let mut events: String = chunks.iter().map(|chunk| format!("data: {chunk}\n\n")).collect();
    events.push_str("data: [DONE]\n\n");
    ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], events).into_response()
}
