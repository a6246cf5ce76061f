//! What the admin and the probe function share about being behind API Gateway, kept out of the
//! domain modules: only the Lambda binaries turn on the `lambda` feature that compiles it.

use lambda_http::request::RequestContext;

/// With `ADMIN_AUTH=iam`: whether API Gateway's IAM authorizer put the caller's identity in the
/// request context. An API deployed without the authorizer puts none, and every request is
/// refused. The [`crate::admin::SignedCheck`] of [`crate::aws::admin_auth`].
pub fn signed_by_iam(extensions: &lambda_http::http::Extensions) -> bool {
    matches!(
        extensions.get::<RequestContext>(),
        Some(RequestContext::ApiGatewayV2(context))
            if context.authorizer.as_ref().is_some_and(|a| a.iam.is_some())
    )
}

#[cfg(test)]
mod tests {
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayV2httpRequestContext,
    };
    use lambda_http::http::Extensions;

    use super::*;

    fn with_context(authorizer: Option<ApiGatewayRequestAuthorizer>) -> Extensions {
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.authorizer = authorizer;
        let mut extensions = Extensions::new();
        extensions.insert(RequestContext::ApiGatewayV2(context));
        extensions
    }

    #[test]
    fn only_an_iam_identity_from_api_gateway_counts_as_signed() {
        let mut iam = ApiGatewayRequestAuthorizer::default();
        iam.iam = Some(Default::default());
        assert!(signed_by_iam(&with_context(Some(iam))));
        // An authorizer of another kind, none at all, or no request context: refused.
        assert!(!signed_by_iam(&with_context(Some(Default::default()))));
        assert!(!signed_by_iam(&with_context(None)));
        assert!(!signed_by_iam(&Extensions::new()));
    }
}
