// Command k8s-validate reads a stream of Kubernetes manifests (the output of `helm template`) and decodes
// every object strictly into its typed Kubernetes API struct: an unknown kind, an unknown or duplicated
// field, or a value of the wrong type fails, with the object and the field named. It also checks object
// names, labels and annotations the way the API server does. It does not talk to a cluster.
//
// Usage: helm template ... | k8s-validate [-json] [-] [FILE...]
//
// With -json it prints the decoded objects as one JSON array on standard output (the summary then goes
// to standard error), so that a test can inspect exactly what the API types kept.
package main

import (
	"bufio"
	"bytes"
	encjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	storagev1 "k8s.io/api/storage/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Only the groups a workload chart renders. A kind outside them (a CRD's, say) is reported as unknown
// rather than passed unchecked.
var groups = []func(*runtime.Scheme) error{
	corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme,
	batchv1.AddToScheme, networkingv1.AddToScheme, autoscalingv2.AddToScheme,
	schedulingv1.AddToScheme, storagev1.AddToScheme, admissionregistrationv1.AddToScheme,
}

// Kinds whose name must be a DNS-1123 label (63 characters, no dots) rather than a subdomain.
var labelNamed = map[string]bool{"Service": true, "Namespace": true}

// Cluster-scoped kinds of these groups: every other kind may carry a namespace.
var clusterScoped = map[string]bool{
	"Namespace": true, "Node": true, "PersistentVolume": true, "ClusterRole": true,
	"ClusterRoleBinding": true, "PriorityClass": true, "StorageClass": true, "CSIDriver": true,
	"ValidatingWebhookConfiguration": true, "MutatingWebhookConfiguration": true,
}

type document struct {
	source string // helm's "# Source:" comment, or the file and document number
	data   []byte
}

func main() {
	scheme := runtime.NewScheme()
	for _, add := range groups {
		if err := add(scheme); err != nil {
			fmt.Fprintln(os.Stderr, "k8s-validate:", err)
			os.Exit(2)
		}
	}
	// Strict: unknown and duplicate fields are errors, not silently dropped.
	decoder := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})

	inputs := os.Args[1:]
	asJSON := len(inputs) > 0 && inputs[0] == "-json"
	if asJSON {
		inputs = inputs[1:]
	}
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	var docs []document
	for _, input := range inputs {
		read, err := readDocuments(input)
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8s-validate:", err)
			os.Exit(2)
		}
		docs = append(docs, read...)
	}

	var problems []string
	var valid []string
	var objects []runtime.Object
	for _, doc := range docs {
		name, obj, err := check(decoder, doc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s (%s): %v", name, doc.source, err))
			continue
		}
		valid = append(valid, name)
		objects = append(objects, obj)
	}
	for _, problem := range problems {
		fmt.Fprintln(os.Stderr, problem)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "k8s-validate: %d of %d objects invalid\n", len(problems), len(docs))
		os.Exit(1)
	}
	if len(docs) == 0 {
		fmt.Fprintln(os.Stderr, "k8s-validate: no objects in the input")
		os.Exit(1)
	}
	summary := fmt.Sprintf("k8s-validate: %d objects valid: %s\n", len(valid), strings.Join(valid, ", "))
	if !asJSON {
		fmt.Print(summary)
		return
	}
	fmt.Fprint(os.Stderr, summary)
	out, err := encjson.MarshalIndent(objects, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s-validate:", err)
		os.Exit(2)
	}
	fmt.Println(string(out))
}

func readDocuments(input string) ([]document, error) {
	var r io.Reader = os.Stdin
	shown := "stdin"
	if input != "-" {
		f, err := os.Open(input)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r, shown = f, input
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var docs []document
	for n := 1; ; n++ {
		data, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", shown, n, err)
		}
		if isEmpty(data) {
			continue
		}
		source := fmt.Sprintf("%s document %d", shown, n)
		for _, line := range strings.Split(string(data), "\n") {
			if s, ok := strings.CutPrefix(line, "# Source: "); ok {
				source = s
				break
			}
		}
		docs = append(docs, document{source: source, data: data})
	}
}

// isEmpty: only comments and blank lines, as helm leaves for a template that rendered nothing.
func isEmpty(data []byte) bool {
	for _, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && !bytes.Equal(line, []byte("---")) {
			return false
		}
	}
	return true
}

// check decodes one document and answers the name to report it by ("Kind/name"), the typed object, and
// its first problem.
func check(decoder runtime.Decoder, doc document) (string, runtime.Object, error) {
	// The header first, leniently, so that even an object that fails to decode is reported by name.
	var header struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	name := "object"
	if err := yaml.Unmarshal(doc.data, &header); err == nil {
		name = fmt.Sprintf("%s/%s", header.Kind, header.Metadata.Name)
	}

	obj, gvk, err := decoder.Decode(doc.data, nil, nil)
	if err != nil {
		if runtime.IsNotRegisteredError(err) && gvk != nil {
			return name, nil, fmt.Errorf("unknown kind %s in %s (not a kind of the Kubernetes API groups checked)",
				gvk.Kind, schema.GroupVersion{Group: gvk.Group, Version: gvk.Version})
		}
		return name, nil, err
	}
	accessor, ok := obj.(metav1.Object)
	if !ok {
		return name, nil, fmt.Errorf("%s has no object metadata", gvk.Kind)
	}
	meta := &metav1.ObjectMeta{
		Name: accessor.GetName(), GenerateName: accessor.GetGenerateName(), Namespace: accessor.GetNamespace(),
		Labels: accessor.GetLabels(), Annotations: accessor.GetAnnotations(),
	}
	nameFn := apivalidation.NameIsDNSSubdomain
	if labelNamed[gvk.Kind] {
		nameFn = apivalidation.NameIsDNSLabel
	}
	// requiresNamespace=false: helm template leaves namespaces to the install, so none is required.
	errs := apivalidation.ValidateObjectMeta(meta, false, nameFn, field.NewPath("metadata"))
	if clusterScoped[gvk.Kind] && meta.Namespace != "" {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "namespace"), "not allowed on a cluster-scoped kind"))
	}
	errs = append(errs, templateMetadata(obj)...)
	if len(errs) > 0 {
		return name, nil, errs.ToAggregate()
	}
	// The serializer leaves apiVersion and kind on typed objects; set them anyway for the -json output.
	obj.GetObjectKind().SetGroupVersionKind(*gvk)
	return name, obj, nil
}

// templateMetadata checks the labels of a workload's pod template and its selector, which the API server
// validates too: a selector that does not match its template is refused at apply time.
func templateMetadata(obj runtime.Object) field.ErrorList {
	var errs field.ErrorList
	check := func(selector *metav1.LabelSelector, template *corev1.PodTemplateSpec) {
		path := field.NewPath("spec")
		if template != nil {
			errs = append(errs, metav1validation.ValidateLabels(template.Labels, path.Child("template", "metadata", "labels"))...)
			errs = append(errs, apivalidation.ValidateAnnotations(template.Annotations, path.Child("template", "metadata", "annotations"))...)
		}
		if selector == nil {
			errs = append(errs, field.Required(path.Child("selector"), ""))
			return
		}
		errs = append(errs, metav1validation.ValidateLabelSelector(selector, metav1validation.LabelSelectorValidationOptions{}, path.Child("selector"))...)
		if template == nil {
			return
		}
		s, err := metav1.LabelSelectorAsSelector(selector)
		if err != nil {
			return
		}
		if s.Empty() || !s.Matches(labels.Set(template.Labels)) {
			errs = append(errs, field.Invalid(path.Child("template", "metadata", "labels"), template.Labels, "`selector` does not match template `labels`"))
		}
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		check(o.Spec.Selector, &o.Spec.Template)
	case *appsv1.StatefulSet:
		check(o.Spec.Selector, &o.Spec.Template)
	case *appsv1.DaemonSet:
		check(o.Spec.Selector, &o.Spec.Template)
	case *policyv1.PodDisruptionBudget:
		check(o.Spec.Selector, nil)
	}
	return errs
}
