// FAKE Job DSL API: a recording stand-in, not the Job DSL plugin.
//
// Usage: groovy JobDslRecorder.groovy SEED.groovy
//
// Runs a Job DSL seed script against recorders that know the part of the Job
// DSL API the mlchain seed uses (the contexts and methods in API below, with
// the argument checks the real plugin makes for them) and prints one JSON
// document of everything the script declared:
//   {"items": [{"type": "job", "name": ..., "body": [{"method", "args", "body"}, ...]}, ...]}
// A method the real API does not have in that context fails the run, so a
// typo in the seed fails here instead of on a controller.

import groovy.json.JsonOutput

class Recorder {
    // context -> method -> context of its closure (null: the method takes no closure)
    static final Map<String, Map<String, String>> API = [
        job: [description: null, label: null, concurrentBuild: null, disabled: null, logRotator: 'logRotator',
              parameters: 'parameters', scm: 'scm', triggers: 'triggers', steps: 'steps',
              publishers: 'publishers'],
        logRotator: [daysToKeep: null, numToKeep: null, artifactDaysToKeep: null, artifactNumToKeep: null],
        parameters: [stringParam: null, booleanParam: null],
        scm: [git: 'git'],
        git: [remote: 'remote', branch: null, branches: null, extensions: 'gitExtensions'],
        remote: [name: null, url: null, refspec: null, credentials: null],
        gitExtensions: [wipeOutWorkspace: null],
        triggers: [githubPush: null, cron: null, scm: null, genericTrigger: 'genericTrigger'],
        // The Generic Webhook Trigger plugin's Job DSL (its README, "Job DSL Plugin").
        genericTrigger: [genericVariables: 'genericVariables', genericHeaderVariables: 'genericHeaderVariables',
                         token: null, tokenCredentialId: null, causeString: null, regexpFilterText: null,
                         regexpFilterExpression: null, printPostContent: null, printContributedVariables: null,
                         silentResponse: null],
        genericVariables: [genericVariable: 'genericVariable'],
        genericVariable: [key: null, value: null, expressionType: null, regexpFilter: null, defaultValue: null],
        genericHeaderVariables: [genericHeaderVariable: 'genericHeaderVariable'],
        genericHeaderVariable: [key: null, regexpFilter: null],
        steps: [shell: 'shell'],
        shell: [command: null, unstableReturn: null],
        publishers: [downstreamParameterized: 'downstreamParameterized'],
        downstreamParameterized: [trigger: 'downstreamTrigger'],
        downstreamTrigger: [condition: null, triggerWithNoParameters: null, parameters: 'downstreamParameters'],
        downstreamParameters: [currentBuild: null, propertiesFile: null, predefinedProp: null],
        buildPipelineView: [description: null, filterBuildQueue: null, filterExecutors: null, selectedJob: null,
                            title: null, displayedBuilds: null, consoleOutputLinkStyle: null,
                            customCssUrl: null, triggerOnlyLatestJob: null, alwaysAllowManualTrigger: null,
                            showPipelineParameters: null, showPipelineParametersInHeaders: null,
                            startsWithParameters: null, refreshFrequency: null,
                            showPipelineDefinitionHeader: null],
    ]

    // The checks the real plugin makes (Preconditions in its contexts).
    static final Set<String> CONDITIONS = ['SUCCESS', 'UNSTABLE', 'UNSTABLE_OR_BETTER', 'UNSTABLE_OR_WORSE',
                                           'FAILED', 'FAILED_OR_BETTER', 'ALWAYS'] as Set
    static final Map<String, Closure> CHECKS = [
        condition: { List a -> assert a.size() == 1 && a[0] in CONDITIONS: "condition must be one of $CONDITIONS" },
        unstableReturn: { List a -> assert a[0] instanceof Integer && a[0] >= 1 && a[0] <= 255:
                                    'unstableReturn must be between 1 and 255' },
        stringParam: { List a -> assert a.size() in 1..3 && a.every { it instanceof String }:
                                 'stringParam(String name, String default, String description)' },
        propertiesFile: { List a -> assert a.size() in 1..2 && a[0] instanceof String:
                                    'propertiesFile(String file, boolean failTriggerOnMissing)' },
        displayedBuilds: { List a -> assert a[0] instanceof Integer && a[0] > 0: 'displayedBuilds must be > 0' },
        refreshFrequency: { List a -> assert a[0] instanceof Integer && a[0] > 0: 'refreshFrequency must be > 0' },
    ]

    final String context
    final List calls = []

    Recorder(String context) { this.context = context }

    static Object plain(Object value) {
        value instanceof GString ? value.toString() : value
    }

    static List record(String context, Closure body) {
        def recorder = new Recorder(context)
        if (body != null) {
            body.delegate = recorder
            body.resolveStrategy = Closure.DELEGATE_ONLY
            body.call()
        }
        recorder.calls
    }

    def methodMissing(String name, Object rawArgs) {
        List args = (rawArgs as List).collect { plain(it) }
        Closure body = args && args.last() instanceof Closure ? (Closure) args.last() : null
        if (body != null) {
            args = args.subList(0, args.size() - 1)
        }
        Map<String, String> known = API[context]
        if (!known.containsKey(name)) {
            throw new IllegalArgumentException(
                "Job DSL has no ${name}() in ${context} {} (this fake knows: ${known.keySet().join(', ')})")
        }
        if (body != null && known[name] == null) {
            throw new IllegalArgumentException("${context} { ${name}() } takes no closure")
        }
        CHECKS[name]?.call(args)
        calls << [method: name, args: args, body: body == null ? [] : record(known[name], body)]
        null
    }
}

def items = []
def binding = new Binding()
binding.setVariable('job', { String name, Closure body ->
    items << [type: 'job', name: name, body: Recorder.record('job', body)]
})
binding.setVariable('buildPipelineView', { String name, Closure body ->
    items << [type: 'buildPipelineView', name: name, body: Recorder.record('buildPipelineView', body)]
})

new GroovyShell(binding).evaluate(new File(args[0]))
println JsonOutput.prettyPrint(JsonOutput.toJson([items: items]))
