//! The event catalogue: docs/events.schema.json is a valid JSON Schema, every example in
//! docs/events.md conforms to it, every event it defines has an example, and events that
//! break the convention are refused.

use std::collections::BTreeSet;
use std::path::Path;

use jsonschema::Validator;
use serde_json::{Value, json};

fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Value {
    serde_json::from_str(&read_doc("events.schema.json")).expect("docs/events.schema.json is JSON")
}

/// The catalogue's validator, with `format` checked (RFC 3339 timestamps).
fn validator() -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .expect("docs/events.schema.json compiles")
}

/// The ```json blocks of docs/events.md, with the line each starts on.
fn examples() -> Vec<(usize, Value)> {
    let doc = read_doc("events.md");
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match &mut block {
            None if line.trim_end() == "```json" => block = Some((i + 1, String::new())),
            None => {}
            Some((start, text)) if line.trim_end() == "```" => {
                let value = serde_json::from_str(text).unwrap_or_else(|e| {
                    panic!("docs/events.md:{start}: the json block is not JSON: {e}")
                });
                out.push((*start, value));
                block = None;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(
        block.is_none(),
        "docs/events.md: a json block is not closed"
    );
    out
}

/// Every schema error of an instance, one per line (empty when it is valid).
fn errors(validator: &Validator, instance: &Value) -> String {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The event types the schema defines (the `const` of each `oneOf` branch).
fn defined_types(schema: &Value) -> BTreeSet<String> {
    schema["oneOf"]
        .as_array()
        .expect("the schema has a oneOf")
        .iter()
        .map(|branch| {
            let reference = branch["$ref"].as_str().expect("oneOf branches are $refs");
            let name = reference.trim_start_matches("#/$defs/");
            schema["$defs"][name]["properties"]["type"]["const"]
                .as_str()
                .unwrap_or_else(|| panic!("{reference} has no type const"))
                .to_owned()
        })
        .collect()
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("docs/events.schema.json is not a valid schema: {e}");
    }
    validator();
}

#[test]
fn every_example_in_the_catalogue_is_a_valid_event() {
    let validator = validator();
    let examples = examples();
    assert!(
        examples.len() >= 19,
        "only {} json examples found in docs/events.md",
        examples.len()
    );
    for (line, event) in &examples {
        let problems = errors(&validator, event);
        assert!(
            problems.is_empty(),
            "docs/events.md:{line}: {event}\n{problems}"
        );
    }
}

#[test]
fn every_event_of_the_schema_has_an_example_and_nothing_else_does() {
    let schema = schema();
    let defined = defined_types(&schema);
    let listed: BTreeSet<String> = schema["properties"]["type"]["enum"]
        .as_array()
        .expect("the type enum")
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        defined, listed,
        "the type enum and the oneOf branches differ"
    );
    let shown: BTreeSet<String> = examples()
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    let missing: Vec<_> = defined.difference(&shown).collect();
    assert!(missing.is_empty(), "events without an example: {missing:?}");
    let unknown: Vec<_> = shown.difference(&defined).collect();
    assert!(
        unknown.is_empty(),
        "examples of undefined events: {unknown:?}"
    );
}

#[test]
fn the_catalogue_covers_the_dag_console_and_notification_events() {
    let defined = defined_types(&schema());
    for event in [
        "node_state",
        "edge_active",
        "cost_update",
        "execution_complete",
        "human_gate_waiting",
        "error",
        "human_decision",
        "pause_execution",
        "resume_execution",
        "cancel_execution",
        "output",
        "tool_call",
        "status",
        "inject_prompt",
        "prompt",
        "cancel",
        "notification",
        "task_update",
        "system_announcement",
    ] {
        assert!(defined.contains(event), "{event} is not in the schema");
    }
}

#[test]
fn an_event_of_an_unknown_type_is_refused() {
    let validator = validator();
    for event in [
        json!({"type": "node_exploded", "data": {"node_id": "n3"}}),
        json!({"type": "NODE_STATE", "data": {"node_id": "n3", "state": "running"}}),
        json!({"type": 7, "data": {}}),
        json!({"data": {"node_id": "n3", "state": "running"}}),
    ] {
        assert!(!validator.is_valid(&event), "accepted {event}");
    }
}

#[test]
fn an_event_without_data_is_refused() {
    let validator = validator();
    for event in [
        json!({"type": "pause_execution"}),
        json!({"type": "node_state", "node_id": "n3", "state": "running"}),
        json!({"type": "system_announcement", "message": "Maintenance at 22:00"}),
        json!({"type": "cancel", "data": null}),
    ] {
        assert!(!validator.is_valid(&event), "accepted {event}");
    }
    // The same events with their data are fine.
    for event in [
        json!({"type": "pause_execution", "data": {}}),
        json!({"type": "node_state", "data": {"node_id": "n3", "state": "running"}}),
        json!({"type": "system_announcement", "data": {"message": "Maintenance at 22:00"}}),
    ] {
        assert_eq!(errors(&validator, &event), "", "{event}");
    }
}

#[test]
fn events_with_fields_of_the_wrong_type_or_value_are_refused() {
    let validator = validator();
    for event in [
        // A required data field missing.
        json!({"type": "node_state", "data": {"node_id": "n3"}}),
        json!({"type": "human_decision", "data": {"decision": "approve"}}),
        // Wrong types.
        json!({"type": "node_state", "data": {"node_id": 3, "state": "running"}}),
        json!({"type": "cost_update", "data": {"spent": "0.25", "budget": 5, "remaining": 4.75}}),
        json!({"type": "tool_call", "data": {"name": "read_file", "input": "src/main.rs"}}),
        json!({"type": "prompt", "data": {"text": "hi", "images": "a.png"}}),
        json!({"type": "error", "data": {"message": "boom", "retryable": "yes"}}),
        json!({"type": "notification", "data": "Flow completed"}),
        // Values outside the enumerations.
        json!({"type": "node_state", "data": {"node_id": "n3", "state": "exploded"}}),
        json!({"type": "human_decision", "data": {"node_id": "n4", "decision": "maybe"}}),
        json!({"type": "task_update", "action": "renamed", "data": {"task_id": "abc123"}}),
        // The envelope is closed: everything goes in data.
        json!({"type": "edge_active", "data": {"from": "n2", "to": "n3"}, "run_id": 7}),
        json!({"type": "output", "action": 1, "data": {"content": "hi"}}),
    ] {
        assert!(!validator.is_valid(&event), "accepted {event}");
    }
}

#[test]
fn timestamps_are_unix_numbers_or_rfc3339_strings() {
    let validator = validator();
    let with =
        |timestamp: Value| json!({"type": "resume_execution", "data": {}, "timestamp": timestamp});
    for ok in [
        json!(1732226400),
        json!(1732226400.25),
        json!(1732226400123_u64),
        json!("2025-10-15T10:30:00Z"),
        json!("2025-10-15T12:30:00.5+02:00"),
    ] {
        let event = with(ok);
        assert_eq!(errors(&validator, &event), "", "{event}");
    }
    for bad in [
        json!("yesterday"),
        json!("1732226400"),
        json!(-5),
        json!(true),
        json!({"s": 1}),
    ] {
        let event = with(bad);
        assert!(!validator.is_valid(&event), "accepted {event}");
    }
}
