//go:build tools

// The test cluster's tools that live in modules of their own (their
// dependency versions differ from the Kubernetes components'): the Helm
// CLI and CoreDNS (./coredns).
package tools

import _ "helm.sh/helm/v4/cmd/helm"
