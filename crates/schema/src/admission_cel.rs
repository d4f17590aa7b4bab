//! CEL for admission policies: an expression compiled once when its policy is loaded, then
//! evaluated per request against bound JSON variables (`object`, `request`, `params`, …).

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as Cel};
use kube_cel::KubeCelExt;
use serde_json::Value;

/// One compiled expression and its source text (messages quote it).
pub struct Expression {
    program: Program,
    text: String,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expression({:?})", self.text)
    }
}

impl Expression {
    /// The expression, or why it does not parse.
    pub fn compile(text: &str) -> Result<Expression, String> {
        let program = Program::compile(text).map_err(|e| e.to_string())?;
        Ok(Expression {
            program,
            text: text.to_string(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// What an expression produced, in the shapes policies ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Bool(bool),
    String(String),
    Null,
    /// Anything else, named by its CEL type (a policy that wanted a bool reports it).
    Other(String),
}

/// The variables one request binds; expressions evaluated against it see all of them.
pub struct Activation {
    ctx: Context<'static>,
    variables: HashMap<Key, Cel>,
}

impl Default for Activation {
    fn default() -> Self {
        Activation::new()
    }
}

impl Activation {
    /// A context with the Kubernetes CEL libraries and nothing bound.
    pub fn new() -> Activation {
        let mut ctx = Context::default();
        ctx.register_all();
        Activation {
            ctx,
            variables: HashMap::new(),
        }
    }

    /// Bind `name` to a JSON value (maps keep their keys as they are: labels and
    /// annotations are indexed by their real names, as upstream's unstructured values).
    pub fn bind(&mut self, name: &str, value: &Value) {
        self.ctx.add_variable_from_value(name, to_cel(value));
    }

    /// Evaluate `expr` and bind the result as `variables.<name>` for later expressions;
    /// a failing variable stays unbound, so only expressions that use it fail.
    pub fn bind_variable(&mut self, name: &str, expr: &Expression) -> Result<(), String> {
        let v = expr.program.execute(&self.ctx).map_err(|e| e.to_string())?;
        self.variables.insert(Key::String(Arc::new(name.into())), v);
        self.ctx.add_variable_from_value(
            "variables",
            Cel::Map(Map {
                map: Arc::new(self.variables.clone()),
            }),
        );
        Ok(())
    }

    /// Run `expr`; an evaluation error is returned as its text.
    pub fn eval(&self, expr: &Expression) -> Result<Outcome, String> {
        Ok(
            match expr.program.execute(&self.ctx).map_err(|e| e.to_string())? {
                Cel::Bool(b) => Outcome::Bool(b),
                Cel::String(s) => Outcome::String(s.as_str().to_string()),
                Cel::Null => Outcome::Null,
                other => Outcome::Other(format!("{:?}", other.type_of())),
            },
        )
    }
}

fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => Cel::Map(Map {
            map: Arc::new(
                o.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binds_objects_params_and_variables() {
        let mut a = Activation::new();
        a.bind("object", &json!({"spec": {"replicas": 6}, "metadata": {"labels": {"app.kubernetes.io/name": "x"}}}));
        a.bind("params", &json!({"data": {"max": "5"}}));
        let max = Expression::compile("int(params.data.max)").unwrap();
        a.bind_variable("max", &max).unwrap();
        let rule = Expression::compile("object.spec.replicas <= variables.max").unwrap();
        assert_eq!(a.eval(&rule), Ok(Outcome::Bool(false)));
        let label =
            Expression::compile("object.metadata.labels['app.kubernetes.io/name']").unwrap();
        assert_eq!(a.eval(&label), Ok(Outcome::String("x".into())));
        let missing = Expression::compile("object.spec.nope == 1").unwrap();
        assert!(a.eval(&missing).is_err());
    }
}
