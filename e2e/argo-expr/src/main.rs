//! Evaluates an Argo Rollouts `successCondition` (or `failureCondition`) the way the AnalysisRun
//! controller does, for the e2e tests.
//!
//! stdin: `{"condition": "len(result) > 0 && result[0] <= 0.01", "result": ["0.004"]}`
//! stdout: `true` or `false`; exit 0.
//! An expression that does not compile, fails to run or gives anything but a boolean: the error
//! on stderr, exit 1 (Argo's Error measurement).
//!
//! `result` is what Argo's Prometheus provider hands the condition: a Vector as a list of
//! float64 (one per series, possibly empty), a Scalar as one float64, or null. A float is a JSON
//! number or a string in the Prometheus HTTP API's spelling (`"NaN"`, `"+Inf"`, `"0.25"`), since
//! JSON has no NaN or infinity. Every number is a float, as in Argo, where a whole `2` still
//! arrives as float64.
//!
//! The environment is that of Argo's `utils/evaluate/evaluate.go` `EvalCondition`: `result`,
//! `isNaN` (Go's math.IsNaN), `isInf` (math.IsInf(f, 0)), `asInt`, `asFloat`, and `isNil` /
//! `default`, which look at the result whatever their argument is.

use std::io::Read;
use std::process::ExitCode;

use expr::{Context, Environment, Value};
use serde_json::Value as Json;

fn main() -> ExitCode {
    match run() {
        Ok(b) => {
            println!("{b}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let input: Json =
        serde_json::from_str(&input).map_err(|e| format!("stdin is not JSON: {e}"))?;
    let condition = input
        .get("condition")
        .and_then(Json::as_str)
        .ok_or("stdin needs \"condition\": a string")?;
    let result = match input.get("result") {
        None | Some(Json::Null) => Value::Nil,
        Some(Json::Array(items)) => {
            Value::Array(items.iter().map(float).collect::<Result<_, _>>()?)
        }
        Some(one) => float(one)?,
    };
    evaluate(condition, result)
}

/// One float64 of the result.
fn float(v: &Json) -> Result<Value, String> {
    match v {
        Json::Number(n) => n.as_f64().map(Value::Float),
        // Go's strconv.ParseFloat, which Prometheus' client uses, reads the same spellings.
        Json::String(s) => s.parse::<f64>().ok().map(Value::Float),
        _ => None,
    }
    .ok_or_else(|| format!("result: {v} is not a float64"))
}

/// What `EvalCondition` returns: the condition's boolean, or why it has none.
fn evaluate(condition: &str, result: Value) -> Result<bool, String> {
    let mut env = Environment::new();
    // math.IsNaN and isInf take a float64: Go's expr refuses anything else when compiling.
    env.add_function("isNaN", |c| {
        Ok(Value::Bool(one_float("isNaN", &c.args)?.is_nan()))
    });
    env.add_function("isInf", |c| {
        Ok(Value::Bool(one_float("isInf", &c.args)?.is_infinite()))
    });
    env.add_function("asInt", |c| as_number("asInt", &c.args, true));
    env.add_function("asFloat", |c| as_number("asFloat", &c.args, false));
    // Argo binds these two to the measurement: the argument is not looked at.
    let is_nil = result.is_nil();
    env.add_function("isNil", move |_| Ok(Value::Bool(is_nil)));
    let value = result.clone();
    env.add_function("default", move |c| match (&value, c.args.get(1)) {
        (Value::Nil, Some(d)) => Ok(d.clone()),
        (Value::Nil, None) => Err(expr::Error::ExprError(
            "default() takes two arguments".into(),
        )),
        (v, _) => Ok(v.clone()),
    });
    let mut ctx = Context::default();
    ctx.insert("result", result);
    match env.eval(condition, &ctx).map_err(|e| e.to_string())? {
        Value::Bool(b) => Ok(b),
        other => Err(format!("expected bool, but got {other:?}")),
    }
}

fn one_float(name: &str, args: &[Value]) -> expr::Result<f64> {
    match args {
        [Value::Float(f)] => Ok(*f),
        _ => Err(expr::Error::ExprError(format!(
            "{name}() takes one float64, got {args:?}"
        ))),
    }
}

/// Argo's asInt / asFloat: numbers converted, strings parsed (a string that does not parse is an
/// error, where Argo's function panics and expr reports it).
fn as_number(name: &str, args: &[Value], int: bool) -> expr::Result<Value> {
    let f = match args {
        [Value::Integer(i)] if int => return Ok(Value::Integer(*i)),
        [Value::Integer(i)] => *i as f64,
        [Value::Float(f)] => *f,
        [Value::String(s)] if int => {
            return s
                .parse::<i64>()
                .map(Value::Integer)
                .map_err(|e| expr::Error::ExprError(format!("{name}({s:?}): {e}")))
        }
        [Value::String(s)] => s
            .parse::<f64>()
            .map_err(|e| expr::Error::ExprError(format!("{name}({s:?}): {e}")))?,
        _ => {
            return Err(expr::Error::ExprError(format!(
                "{name}() not supported on {args:?}"
            )))
        }
    };
    // Go's int64(f) truncates towards zero.
    Ok(if int {
        Value::Integer(f.trunc() as i64)
    } else {
        Value::Float(f)
    })
}
